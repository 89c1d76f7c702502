"""RGB-D sources: NYU .mat, manifest CSV and synthetic scenes, on tiny files made here."""

from __future__ import annotations

import math
import operator
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from defocus_lit.data import synthetic
from defocus_lit.data.frames import RGBDFrame
from defocus_lit.data.sources import NYU_CROP, open_source
from defocus_lit.data.synthetic import Canvas, SyntheticSource, synthetic_scene
from defocus_lit.errors import UserError

# ------------------------------------------------------------------------------------------------ helpers


def frames_rgbd(n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,H,W,3) uint8 and (n,H,W) float32 whose values encode frame, row and column."""
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    images = np.empty((n, height, width, 3), np.uint8)
    depths = np.empty((n, height, width), np.float32)
    for i in range(n):
        images[i, ..., 0] = rows % 256
        images[i, ..., 1] = cols % 256
        images[i, ..., 2] = i
        depths[i] = 1.0 + i + rows * 0.01 + cols * 0.0001
    return images, depths


def write_mat(path: Path, images: np.ndarray | None, depths: np.ndarray | None) -> Path:
    """A MATLAB v7.3-style file as h5py sees the NYU one: images (N,3,W,H), depths (N,W,H)."""
    with h5py.File(path, "w") as f:
        if images is not None:
            f.create_dataset("images", data=images.transpose(0, 3, 2, 1))
        if depths is not None:
            f.create_dataset("depths", data=depths.transpose(0, 2, 1))
    return path


@pytest.fixture
def small_mat(tmp_path):
    images, depths = frames_rgbd(3, 20, 30)
    return write_mat(tmp_path / "small.mat", images, depths), images, depths


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ nyu-mat


def test_nyu_default_crop_and_orientation(tmp_path):
    images, depths = frames_rgbd(2, 480, 640)
    src = open_source("nyu-mat", str(write_mat(tmp_path / "nyu.mat", images, depths)))
    assert src.kind_name == "nyu-mat" and len(src) == 2
    frame = src[1]
    r0, r1, c0, c1 = NYU_CROP
    assert frame.image.shape == (r1 - r0, c1 - c0, 3) and frame.image.dtype == np.uint8
    assert frame.depth.shape == (r1 - r0, c1 - c0) and frame.depth.dtype == np.float32
    np.testing.assert_array_equal(frame.image, images[1, r0:r1, c0:c1])
    np.testing.assert_array_equal(frame.depth, depths[1, r0:r1, c0:c1])
    assert frame.image[0, 0, 0] == 45 and frame.image[0, 0, 1] == 41  # row and column, not swapped
    assert (frame.name, frame.kind, frame.split) == ("nyu_00001", "depth", None)
    assert src.attrs()["crop"] == list(NYU_CROP)


def test_nyu_custom_crop_num_and_negative_index(small_mat):
    path, images, depths = small_mat
    src = open_source("nyu-mat", str(path), crop=(2, 18, 3, 27), num=2)
    assert len(src) == 2
    frame = src[-1]
    np.testing.assert_array_equal(frame.image, images[1, 2:18, 3:27])
    np.testing.assert_array_equal(frame.depth, depths[1, 2:18, 3:27])
    with pytest.raises(IndexError):
        src[2]


def test_nyu_splits(small_mat, tmp_path):
    path, _, _ = small_mat
    splits = tmp_path / "splits.mat"
    scipy.io.savemat(splits, {"trainNdxs": np.array([[1], [3]]), "testNdxs": np.array([[2]])})
    src = open_source("nyu-mat", str(path), splits=str(splits), crop=(0, 20, 0, 30))
    assert [f.split for f in src] == ["train", "test", "train"]
    assert src.attrs()["splits"].endswith("splits.mat")


def test_nyu_source_reads_after_pickling_and_in_a_worker(small_mat):
    path, images, _ = small_mat
    src = open_source("nyu-mat", str(path), crop=(0, 20, 0, 30))
    src[0]  # opens the file in this process
    copy = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(copy[2].image, images[2])
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        frame = pool.submit(operator.getitem, src, 2).result()
    assert isinstance(frame, RGBDFrame)
    np.testing.assert_array_equal(frame.image, images[2])


@pytest.mark.parametrize("missing", ["images", "depths"])
def test_nyu_mat_without_a_key(tmp_path, missing):
    images, depths = frames_rgbd(1, 8, 8)
    path = write_mat(
        tmp_path / "partial.mat", None if missing == "images" else images, None if missing == "depths" else depths
    )
    with pytest.raises(UserError, match=f"partial.mat.*'{missing}'"):
        open_source("nyu-mat", str(path))


def test_nyu_mat_wrong_shapes(tmp_path):
    with h5py.File(tmp_path / "flat.mat", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 8, 8), np.uint8))
        f.create_dataset("depths", data=np.ones((2, 8, 8), np.float32))
    with pytest.raises(UserError, match="flat.mat.*images"):
        open_source("nyu-mat", str(tmp_path / "flat.mat"))
    images, depths = frames_rgbd(2, 8, 10)
    write_mat(tmp_path / "mismatch.mat", images, depths[:, :, :6])
    with pytest.raises(UserError, match="mismatch.mat.*depths"):
        open_source("nyu-mat", str(tmp_path / "mismatch.mat"))


def test_nyu_bad_inputs(small_mat, tmp_path):
    path, _, _ = small_mat
    with pytest.raises(UserError, match="nowhere.mat"):
        open_source("nyu-mat", str(tmp_path / "nowhere.mat"))
    (tmp_path / "text.mat").write_text("not hdf5")
    with pytest.raises(UserError, match="text.mat"):
        open_source("nyu-mat", str(tmp_path / "text.mat"))
    with pytest.raises(UserError, match="crop"):
        open_source("nyu-mat", str(path))  # the default crop does not fit 20x30 frames
    scipy.io.savemat(tmp_path / "half.mat", {"trainNdxs": np.array([[1]])})
    with pytest.raises(UserError, match="half.mat.*testNdxs"):
        open_source("nyu-mat", str(path), splits=str(tmp_path / "half.mat"), crop=(0, 20, 0, 30))
    with pytest.raises(UserError, match="path"):
        open_source("nyu-mat")


def test_nyu_depth_without_valid_pixel(tmp_path):
    images, depths = frames_rgbd(2, 8, 8)
    depths[1] = 0
    src = open_source("nyu-mat", str(write_mat(tmp_path / "holes.mat", images, depths)), crop=(0, 8, 0, 8))
    src[0]
    with pytest.raises(UserError, match=r"holes.mat\[1\].*no valid depth"):
        src[1]


# ----------------------------------------------------------------------------------------------- manifest


@pytest.fixture
def manifest_dir(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    millimetres = rng.integers(500, 9000, (6, 8)).astype(np.uint16)
    millimetres[0, 0] = 0  # no measurement
    write_png(tmp_path / "room_rgb.png", image)
    write_png(tmp_path / "room_depth.png", millimetres)
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "photo.png", image)
    write_png(tmp_path / "sub" / "photo_disp.png", millimetres)
    disparity = np.zeros((6, 8, 3), np.uint8)
    disparity[..., 0] = 200
    disparity[:, 4:, 0] = 40
    disparity[..., 1:] = 90  # other channels differ: the first one is used
    Image.fromarray(disparity).save(tmp_path / "street_disparity.jpg", quality=100)
    Image.fromarray(image).save(tmp_path / "street_rgb.jpg")
    return tmp_path, image, millimetres


def test_manifest_kinds_and_scales(manifest_dir):
    root, image, millimetres = manifest_dir
    csv = write_csv(
        root / "list.csv",
        "image,depth,kind,scale,source,licence",
        [
            "room_rgb.png,room_depth.png,,,Kinect,MIT",
            "room_rgb.png,room_depth.png,depth,0.0002,Kinect,MIT",
            "sub/photo.png,sub/photo_disp.png,disparity,,DPT,MIT",
            "street_rgb.jpg,street_disparity.jpg,disparity,,MPIB,Apache-2.0",
        ],
    )
    src = open_source("manifest", str(csv))
    assert src.kind_name == "manifest" and len(src) == 4
    metres = src[0]
    assert (metres.name, metres.kind, metres.split) == ("room", "depth", None)
    np.testing.assert_array_equal(metres.image, image)
    np.testing.assert_allclose(metres.depth, millimetres * 0.001, rtol=1e-6)
    assert metres.depth[0, 0] == 0 and metres.depth.dtype == np.float32
    np.testing.assert_allclose(src[1].depth, millimetres * 0.0002, rtol=1e-6)
    disparity = src[2]
    assert disparity.kind == "disparity" and disparity.name == "photo"
    np.testing.assert_array_equal(disparity.depth, millimetres.astype(np.float32))  # 16-bit values as they are
    jpeg = src[3]
    first_channel = np.asarray(Image.open(root / "street_disparity.jpg"))[..., 0].astype(np.float32)
    np.testing.assert_array_equal(jpeg.depth, first_channel)
    assert abs(jpeg.depth[:, :3].mean() - 200) < 8 and abs(jpeg.depth[:, 5:].mean() - 40) < 8
    assert src.attrs()["kinds"] == ["depth", "disparity"]
    assert len(open_source("manifest", str(csv), num=2)) == 2


def test_manifest_minimal_columns(manifest_dir):
    root, _, millimetres = manifest_dir
    csv = write_csv(root / "plain.csv", "image,depth", ["room_rgb.png,room_depth.png"])
    frame = open_source("manifest", str(csv))[0]
    assert frame.kind == "depth"
    np.testing.assert_allclose(frame.depth, millimetres * 0.001, rtol=1e-6)


def test_manifest_validation_before_reading(manifest_dir):
    root, _, _ = manifest_dir
    with pytest.raises(UserError, match="absent.csv"):
        open_source("manifest", str(root / "absent.csv"))
    no_depth = write_csv(root / "nodepth.csv", "image,disparity", ["room_rgb.png,room_depth.png"])
    with pytest.raises(UserError, match="nodepth.csv.*depth"):
        open_source("manifest", str(no_depth))
    no_image = write_csv(root / "noimage.csv", "rgb,depth", ["room_rgb.png,room_depth.png"])
    with pytest.raises(UserError, match="noimage.csv.*image"):
        open_source("manifest", str(no_image))
    missing = write_csv(
        root / "missing.csv", "image,depth", ["room_rgb.png,room_depth.png", "room_rgb.png,gone_depth.png"]
    )
    with pytest.raises(UserError, match="gone_depth.png"):
        open_source("manifest", str(missing))
    bad_kind = write_csv(root / "kind.csv", "image,depth,kind", ["room_rgb.png,room_depth.png,normals"])
    with pytest.raises(UserError, match="kind.csv.*normals"):
        open_source("manifest", str(bad_kind))
    bad_scale = write_csv(root / "scale.csv", "image,depth,scale", ["room_rgb.png,room_depth.png,-1"])
    with pytest.raises(UserError, match="scale.csv.*scale"):
        open_source("manifest", str(bad_scale))
    with pytest.raises(UserError, match="empty.csv.*no rows"):
        open_source("manifest", str(write_csv(root / "empty.csv", "image,depth", [])))


def test_manifest_per_frame_checks(manifest_dir):
    root, _, _ = manifest_dir
    write_png(root / "small_depth.png", np.full((3, 4), 1000, np.uint16))
    write_png(root / "blank_depth.png", np.zeros((6, 8), np.uint16))
    csv = write_csv(
        root / "frames.csv",
        "image,depth",
        ["room_rgb.png,room_depth.png", "room_rgb.png,small_depth.png", "room_rgb.png,blank_depth.png"],
    )
    src = open_source("manifest", str(csv))
    src[0]
    with pytest.raises(UserError, match="small_depth.png.*4x3.*room_rgb.png.*8x6"):
        src[1]
    with pytest.raises(UserError, match="blank_depth.png.*no valid depth"):
        src[2]


def test_open_source_rejects_unknown_names_and_misplaced_options(tmp_path):
    with pytest.raises(UserError, match="kinect.*synthetic, nyu-mat, manifest"):
        open_source("kinect", "x")
    with pytest.raises(UserError, match="splits"):
        open_source("manifest", "x.csv", splits="splits.mat")
    with pytest.raises(UserError, match="num"):
        open_source("synthetic", num=0)


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthetic_frames_are_seeded_and_bit_identical():
    a = SyntheticSource(3, size=(48, 64), seed=5)
    b = open_source("synthetic", num=3, size=(48, 64), seed=5)
    assert b.kind_name == "synthetic" and len(b) == 3
    f1, f2 = a[1], b[1]
    np.testing.assert_array_equal(f1.image, f2.image)
    np.testing.assert_array_equal(f1.depth, f2.depth)
    shifted = SyntheticSource(1, size=(48, 64), seed=6)[0]  # frame i comes from seed + i
    np.testing.assert_array_equal(shifted.image, f1.image)
    assert not np.array_equal(a[0].image, f1.image)
    assert (f1.name, f1.kind, f1.split) == ("synthetic_00001", "depth", None)
    assert a.attrs() == {"source": "synthetic", "num": 3, "size": [48, 64], "seed": 5}


def test_outdoor_scenes_are_also_read_as_disparity():
    """Every frame keeps its metric depth; the outdoor ones (about a third: every scene that shows the sky, at
    MAX_DEPTH, and none of the rooms, whose far wall is nearer) are flagged to be rendered from disparity too."""
    frames = list(SyntheticSource(60, (48, 48), seed=0))
    flagged = [f.also_disparity for f in frames]
    sky = [bool((f.depth >= synthetic.MAX_DEPTH).any()) for f in frames]
    assert 12 <= sum(flagged) <= 30
    assert all(f for f, s in zip(flagged, sky) if s) and sum(sky) >= sum(flagged) / 2
    assert {f.kind for f in frames} == {"depth"}
    for frame in frames[:6]:
        np.testing.assert_array_equal(frame.depth, synthetic_scene(int(frame.name[-5:]), (48, 48))[1])


@pytest.mark.parametrize("size", [(64, 64), (17, 40), (40, 23)])
def test_synthetic_any_size_metric_depth(size):
    for seed in range(3):
        image, depth = synthetic_scene(seed, size)
        assert image.shape == (*size, 3) and image.dtype == np.uint8
        assert depth.shape == size and depth.dtype == np.float32
        assert np.isfinite(depth).all() and depth.min() >= 0.1 and depth.max() <= 10.0


def test_synthetic_scenes_have_depth_structure():
    for seed in range(4):
        image, depth = synthetic_scene(seed, (96, 96))
        assert depth.max() / depth.min() > 2.5  # near and far things, at any scale
        assert image.std() > 15  # textured, not flat
        # occlusion boundaries (depth jumps between neighbours) are visible edges in the image
        jump = np.abs(np.diff(np.log(depth), axis=1)) > 0.2
        change = np.abs(np.diff(image.astype(np.float32), axis=1)).sum(-1)
        assert jump.sum() > 20 and change[jump].mean() > 2 * change[~jump].mean()


def test_close_ups_scale_the_geometry_and_coarsen_the_textures(monkeypatch):
    monkeypatch.setattr(synthetic, "PERSON_CHANCE", {True: 0.0, False: 0.0})  # room-size scenes only: not scaled
    monkeypatch.setattr(synthetic, "TILT_CHANCE", {True: 0.0, False: 0.0})  # the same view, only the scale differs
    scaled = [seed for seed in range(40) if synthetic._close_up_scale(seed, outdoor=False) < 1.0]
    assert 10 <= len(scaled) <= 30  # about half the indoor scenes
    assert all(synthetic._close_up_scale(seed, outdoor=True) == 1.0 for seed in range(40))
    close = {seed: synthetic_scene(seed, (64, 64)) for seed in scaled[:4]}
    monkeypatch.setattr(synthetic, "CLOSE_UP_CHANCE", 0.0)
    close_ups = 0
    for seed, (image, depth) in close.items():
        room_image, room_depth = synthetic_scene(seed, (64, 64))
        if np.array_equal(depth, room_depth):  # an outdoor scene: never scaled
            continue
        close_ups += 1
        scale = synthetic._close_up_scale(seed, outdoor=False)  # 1 now: the same draws, room size
        assert scale == 1.0
        inside = room_depth < synthetic.MAX_DEPTH
        ratio = depth[inside] / room_depth[inside]
        assert np.median(ratio) < 0.8 and np.allclose(ratio, np.median(ratio), rtol=1e-4)  # one factor for all
        assert not np.array_equal(image, room_image)  # same layout, coarser textures and less fall-off
    assert close_ups >= 1


def test_texture_density_varies_per_scene_and_changes_the_textures_only(monkeypatch):
    factors = [synthetic._texture_density(seed) for seed in range(40)]
    assert min(factors) >= synthetic.TEXTURE_DENSITY[0] and max(factors) <= synthetic.TEXTURE_DENSITY[1]
    assert min(factors) < 0.8 and max(factors) > 1.25  # both coarser and finer than the materials' own
    denser = 0
    for seed in range(4):
        scenes = {}
        for factor in (0.25, 4.0):
            monkeypatch.setattr(synthetic, "TEXTURE_DENSITY", (factor, factor))
            scenes[factor] = synthetic_scene(seed, (64, 64))
        (coarse, coarse_depth), (fine, fine_depth) = scenes[0.25], scenes[4.0]
        assert np.array_equal(coarse_depth, fine_depth)  # the same geometry
        detail = [np.abs(np.diff(image.astype(np.float32), axis=1)).mean() for image in (coarse, fine)]
        denser += detail[1] > detail[0]  # 16x denser textures: more change from pixel to pixel
    assert denser >= 3


def test_a_camera_tilted_down_sees_the_floor_at_height_over_sine_of_the_tilt():
    tilt, height = 0.6, 0.5
    cam = synthetic._Camera(f=100.0, cx=50.0, cy=50.0, height=height, light=(0.0, -1.0, 0.0), tilt=tilt)
    assert np.allclose(cam.to_level(*cam.from_level(0.3, -0.2, 1.5)), (0.3, -0.2, 1.5))
    floor = synthetic._Plane((0, 1, 0), height, (1, 0, 0), (0, 0, 1), None, 1.0)
    (turned,), _ = synthetic._tilted(tilt, cam, [floor], [])[1:]
    centre = synthetic._plane_depth(turned, np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), cam)
    assert centre.item() == pytest.approx(height / math.sin(tilt), rel=1e-5)  # a level camera never sees it there
    assert np.isinf(synthetic._plane_depth(floor, np.zeros((1, 1)), np.zeros((1, 1)), cam)).all()


def test_close_ups_are_seen_from_above_more_often_than_rooms():
    seeds = range(400)
    close_ups = np.mean([synthetic._tilt(seed, outdoor=False, close_up=True) > 0 for seed in seeds])
    rooms = np.mean([synthetic._tilt(seed, outdoor=False, close_up=False) > 0 for seed in seeds])
    assert close_ups == pytest.approx(synthetic.TILT_CHANCE[True], abs=0.06)
    assert rooms == pytest.approx(synthetic.TILT_CHANCE[False], abs=0.06)
    assert close_ups > rooms + 0.3


def test_tilted_scenes_look_down_at_the_floor(monkeypatch):
    def tilt(seed: int) -> float:
        return synthetic._tilt(seed, outdoor=False, close_up=synthetic._close_up_scale(seed, outdoor=False) < 1)

    tilted = [seed for seed in range(40) if tilt(seed) > 0.5]
    assert all(synthetic._tilt(seed, outdoor=True, close_up=True) == 0.0 for seed in range(40))
    scenes = {seed: synthetic_scene(seed, (48, 48))[1] for seed in tilted[:6]}
    monkeypatch.setattr(synthetic, "TILT_CHANCE", {True: 0.0, False: 0.0})
    nearer = 0
    for seed, depth in scenes.items():
        level = synthetic_scene(seed, (48, 48))[1]
        if np.array_equal(depth, level):  # an outdoor scene: never tilted
            continue
        # the top rows: wall, sky or far floor for the level camera; the floor nearer by for the tilted one
        nearer += np.median(depth[:8]) < 0.7 * np.median(level[:8])
    assert nearer >= 2


def test_a_person_stands_near_the_camera_in_front_of_the_scene(monkeypatch):
    monkeypatch.setattr(synthetic, "PERSON_CHANCE", {True: 0.0, False: 0.0})
    without = {seed: synthetic_scene(seed, (64, 64))[1] for seed in range(6)}
    monkeypatch.setattr(synthetic, "PERSON_CHANCE", {True: 1.0, False: 1.0})
    people = 0
    for seed, depth in without.items():
        with_person = synthetic_scene(seed, (64, 64))[1]
        changed = with_person != depth
        if not changed.any():  # a close-up (no person at doll scale) or a person hidden by what is in front
            continue
        people += 1
        assert (with_person[changed] < depth[changed]).all()  # only nearer: in front of what was there
        assert 0.7 * 0.9 < with_person[changed].min() and with_person[changed].max() < 3.1  # 0.7-3 m away
        assert changed[:, 16:48].sum() >= changed.sum() * 0.5  # near the middle of the view
    assert people >= 2


def test_canvas_nearer_sprite_occludes_in_any_order():
    rows, cols = slice(2, 6), slice(2, 6)
    ones = np.ones((4, 4), np.float32)
    red, blue = np.array([1, 0, 0], np.float32)[:, None, None], np.array([0, 0, 1], np.float32)[:, None, None]
    results = []
    for order in ((5.0, red), (2.0, blue)), ((2.0, blue), (5.0, red)):
        canvas = Canvas(8, 8)
        for depth, colour in order:
            canvas.paint(rows, cols, ones, depth * ones, colour * ones)
        results.append(canvas)
    for canvas in results:
        np.testing.assert_array_equal(canvas.rgb[:, 3, 3], [0, 0, 1])  # the near blue one wins
        assert canvas.depth[3, 3] == 2.0 and np.isinf(canvas.depth[0, 0])


def test_synthetic_bad_arguments():
    with pytest.raises(UserError, match="size"):
        SyntheticSource(2, size=(4, 64))
    with pytest.raises(UserError, match="num"):
        SyntheticSource(0)
    with pytest.raises(UserError, match="seed"):
        SyntheticSource(2, seed=-1)
