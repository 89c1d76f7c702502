"""DefocusDataModule: batch layout, augmentations that keep every map aligned, padding, alt pairs, seeding."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from defocus_lit.data.build import build_dataset
from defocus_lit.data.datamodule import DefocusDataModule, collate
from defocus_lit.data.frames import KINDS
from defocus_lit.data.planes import PLANES, SampleFilter
from defocus_lit.data.samples import FrameSamples, as_disparity, frame_samples
from defocus_lit.data.sources import open_source
from defocus_lit.errors import UserError
from defocus_lit.render import RenderSettings

SIZE = 64


def _write(path, image, target, mask, patch, weight, depth, plane, frame, split):
    """A file in the build layout from explicit arrays (N,H,W[,3])."""
    n = len(image)
    with h5py.File(path, "w") as f:
        for name, data in (
            ("image", image),
            ("target", target),
            ("mask", mask),
            ("patch_mask", patch),
            ("depth_weight", weight),
        ):
            f.create_dataset(name, data=np.asarray(data, np.uint8), chunks=(1, *np.shape(data)[1:]))
        f.create_dataset("depth", data=np.asarray(depth, np.float16), chunks=(1, *np.shape(depth)[1:]))
        f.create_dataset("radius", data=np.asarray(weight, np.float16) / 8, chunks=(1, *np.shape(depth)[1:]))
        f["plane"] = np.asarray(plane, np.uint8)
        f["frame"] = np.asarray(frame, np.int32)
        f["split"] = np.asarray(split, np.uint8)
        f["mean_radius"] = np.full(n, 3.0, np.float32)
        f["source"] = np.zeros(n, np.uint8)
        f["kind"] = np.zeros(n, np.uint8)
        for key in ("source", "renderer", "planes", "filter_counts", "split_sizes"):
            f.attrs[key] = json.dumps({})
        f.attrs["sources"] = json.dumps([{"name": "test", "path": None, "weight": 1.0, "frames": n}])
        f.attrs["depth_kind"] = "depth"
        f.attrs["version"] = "test"


def _coded_file(path, n=6):
    """Every pixel encodes its own position: image R = 4*col, G = 4*row, B = 40*sample; target = image; the mask
    is a checkerboard of 8-px squares, the patch mask its 128 version, depth weight (row + col), radius its 1/8, depth 0
    (unmeasured) in every 7th column. Samples 0-3 train, 4 val (fore), 5 val (back) of frame 4."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    image = np.stack(
        [
            np.broadcast_to(np.stack([4 * cols, 4 * rows, np.full_like(rows, 40 * i)], -1), (SIZE, SIZE, 3))
            for i in range(n)
        ]
    ).astype(np.uint8)
    checker = np.where((rows // 8 + cols // 8) % 2 == 1, 255, 0)
    depth = np.where(cols % 7 == 0, 0.0, 1.0 + rows / SIZE)
    _write(
        path,
        image,
        image,
        np.stack([checker] * n),
        np.stack([checker // 2 + (checker > 0)] * n),
        np.stack([rows + cols] * n),
        np.stack([depth] * n),
        plane=[0, 1, 2, 0, 0, 2],
        frame=[0, 1, 2, 3, 4, 4],
        split=[0, 0, 0, 0, 1, 1],
    )
    return path


def _u8(x: torch.Tensor) -> np.ndarray:
    """[-1,1] (B,3,H,W) -> uint8 (B,H,W,3)."""
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def build_synthetic(folder: Path, num: int, seed: int, max_radius: float, split: tuple[float, float, float]) -> Path:
    """A dataset of `num` synthetic SIZE x SIZE frames rendered with 4 layers, in `folder`."""
    path = folder / "d.h5"
    build_dataset(
        open_source("synthetic", num=num, size=(SIZE, SIZE), seed=seed),
        path,
        settings=RenderSettings(layers=4, max_radius=max_radius),
        split=split,
        progress=False,
        workers=0,
    )
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_synthetic(tmp_path_factory.mktemp("dm"), num=10, seed=1, max_radius=4.0, split=(0.6, 0.2, 0.2))


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    return _coded_file(tmp_path_factory.mktemp("coded") / "coded.h5")


@pytest.mark.parametrize("mask_kind", ["binary", "patch"])
def test_batch_keys_shapes_ranges(built, mask_kind):
    dm = DefocusDataModule(str(built), batch_size=3, crop_size=32, mask_kind=mask_kind, pad_multiple=32, radius=True)
    batch = next(iter(dm.train_dataloader()))
    keys = {"image", "target", "mask", "focus", "depth_weight", "valid", "plane", "frame", "kind", "mean_radius"}
    keys |= {"strength", "amount", "amount_told"}
    assert set(batch) == keys | {"radius"}
    plain = DefocusDataModule(str(built), batch_size=3, crop_size=32, mask_kind=mask_kind, pad_multiple=32)
    assert set(next(iter(plain.train_dataloader()))) == keys  # the radius is read only when a loss needs it
    for key in ("image", "target"):
        assert batch[key].shape == (3, 3, 32, 32) and batch[key].dtype == torch.float32
        assert -1 <= batch[key].min() and batch[key].max() <= 1
    for key in ("mask", "focus", "depth_weight", "valid"):
        assert batch[key].shape == (3, 1, 32, 32) and 0 <= batch[key].min() and batch[key].max() <= 1
    assert set(batch["focus"].unique().tolist()) <= {0.0, 1.0}
    assert set(batch["valid"].unique().tolist()) <= {0.0, 1.0}
    levels = {0.0, 0.5, 1.0} if mask_kind == "patch" else {0.0, 1.0}
    assert set(batch["mask"].unique().tolist()) <= levels
    assert torch.equal(batch["focus"], (batch["mask"] == 0).float())  # in focus = 0 in both mask kinds
    assert batch["plane"].dtype == torch.long and batch["frame"].dtype == torch.long and batch["plane"].shape == (3,)
    assert batch["mean_radius"].dtype == torch.float32 and (batch["mean_radius"] >= 0).all()
    assert batch["radius"].shape == (3, 1, 32, 32) and batch["radius"].dtype == torch.float32
    assert 0 <= batch["radius"].min() and batch["radius"].max() <= 4.0  # the fixture renders with max_radius 4

    val = next(iter(dm.val_dataloader()))
    assert {"alt_mask", "alt_target", "has_alt"} <= set(val) and val["has_alt"].dtype == torch.bool
    # full frames: the per-pixel radius averages to the recorded mean radius over the blurred pixels
    blurred = (val["mask"] > 0) & (val["valid"] > 0)
    for i in range(val["radius"].shape[0]):
        mean = val["radius"][i][blurred[i]].mean().item()
        assert mean == pytest.approx(val["mean_radius"][i].item(), abs=0.02)
    assert val["image"].shape[-2:] == (SIZE, SIZE) and val["alt_mask"].shape == val["mask"].shape


@pytest.mark.parametrize("mask_kind", ["binary", "patch"])
def test_crop_and_flip_move_every_map_together(coded, mask_kind):
    dm = DefocusDataModule(
        str(coded), batch_size=4, crop_size=24, mask_kind=mask_kind, photometric=False, seed=5, radius=True
    )
    flipped, loader = set(), dm.train_dataloader()
    for _ in range(3):  # three epochs
        batch = next(iter(loader))
        image = _u8(batch["image"]).astype(int)
        assert np.array_equal(image, _u8(batch["target"]))
        col, row = image[..., 0] // 4, image[..., 1] // 4  # where each output pixel came from
        checker = (row // 8 + col // 8) % 2 == 1
        expected = np.where(checker, 1.0, 0.0) if mask_kind == "binary" else np.where(checker, 0.5, 0.0)
        assert np.array_equal(batch["mask"][:, 0].numpy(), expected)
        assert np.array_equal(batch["focus"][:, 0].numpy(), (~checker).astype(np.float32))
        assert np.array_equal(np.rint(batch["depth_weight"][:, 0].numpy() * 255), row + col)
        assert np.array_equal(batch["radius"][:, 0].numpy(), (row + col) / 8)
        assert np.array_equal(batch["valid"][:, 0].numpy(), (col % 7 != 0).astype(np.float32))
        assert (image[..., 2] == 40 * batch["frame"].numpy()[:, None, None]).all()  # frame 0-3 = sample 0-3
        flipped |= {bool(c[0, 0] > c[0, -1]) for c in col}
        assert all(len(np.unique(np.diff(c, axis=1))) == 1 for c in col)  # contiguous window, one direction
    assert flipped == {True, False}


def test_photometric_identical_on_image_and_target(coded):
    dm = DefocusDataModule(str(coded), batch_size=4, crop_size=SIZE, photometric=True, seed=0)
    changed, loader = 0, dm.train_dataloader()
    for _ in range(4):
        batch = next(iter(loader))
        image = _u8(batch["image"])
        assert np.array_equal(image, _u8(batch["target"]))
        col, row = np.mgrid[:SIZE, :SIZE][::-1]
        raw = np.stack([4 * col, 4 * row], -1)
        changed += sum(
            not (np.array_equal(im[..., :2], raw) or np.array_equal(im[..., :2], raw[:, ::-1])) for im in image
        )
    assert changed > 0


def test_val_full_frame_padded(coded):
    dm = DefocusDataModule(str(coded), batch_size=2, pad_multiple=48, mask_kind="binary")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 3, 96, 96)
    image = _u8(batch["image"])
    assert np.array_equal(image[:, :SIZE, SIZE:], image[:, :SIZE, SIZE - 2 : SIZE - 34 : -1])  # reflected
    assert np.array_equal(image[:, SIZE:, :SIZE], image[:, SIZE - 2 : SIZE - 34 : -1, :SIZE])
    assert np.array_equal(_u8(batch["target"]), image)
    assert (batch["mask"][..., SIZE:, :] == 1).all() and (batch["mask"][..., :, SIZE:] == 1).all()
    assert (batch["alt_mask"][..., SIZE:, :] == 1).all()
    assert (batch["valid"][..., SIZE:, :] == 0).all() and (batch["valid"][..., :, SIZE:] == 0).all()
    assert (batch["focus"][..., SIZE:, :] == 0).all()
    assert np.array_equal(
        batch["valid"][:, 0, :SIZE, :SIZE].numpy(),
        np.broadcast_to(np.arange(SIZE) % 7 != 0, (2, SIZE, SIZE)).astype(np.float32),
    )


def test_alt_pair_is_the_opposite_plane_of_the_same_frame(built):
    dm = DefocusDataModule(str(built), batch_size=64, pad_multiple=SIZE)
    dm.setup("validate")
    with h5py.File(built) as f:
        plane, frame, kind, split = (f[k][:] for k in ("plane", "frame", "kind", "split"))
        target, mask = f["target"][:], f["mask"][:]
    assert set(kind) == {0, 1}  # the synthetic outdoor scenes are read as disparity too: two fore planes per frame
    for name, code in (("val", 1), ("test", 2)):
        loader = dm.val_dataloader() if name == "val" else dm.test_dataloader()
        batch = next(iter(loader))
        assert len(batch["plane"]) == (split == code).sum()
        for p, fr, k, has, alt_t, alt_m in zip(
            batch["plane"],
            batch["frame"],
            batch["kind"],
            batch["has_alt"],
            _u8(batch["alt_target"]),
            batch["alt_mask"][:, 0],
        ):
            want = {0: 2, 2: 0}.get(int(p))
            same_reading = (frame == int(fr)) & (kind == int(k))
            match = np.flatnonzero(same_reading & (plane == want)) if want is not None else []
            assert bool(has) == (len(match) == 1)
            if has:
                assert np.array_equal(alt_t, target[match[0]])
                assert np.array_equal(alt_m.numpy() * 255, mask[match[0]])
    batch = next(iter(dm.val_dataloader()))
    assert batch["has_alt"].any()


def test_seeded_and_independent_of_workers(built):
    def epoch(seed, workers):
        dm = DefocusDataModule(str(built), batch_size=2, num_workers=workers, crop_size=32, seed=seed)
        return list(dm.train_dataloader())

    a, b, c = epoch(3, 0), epoch(3, 0), epoch(4, 0)
    assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c))
    d = epoch(3, 2)
    assert len(d) == len(a)
    assert sorted((int(f), int(p)) for x in a for f, p in zip(x["frame"], x["plane"])) == sorted(
        (int(f), int(p)) for x in d for f, p in zip(x["frame"], x["plane"])
    )
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, d))  # per-sample seeds: same batches too


def test_epochs_differ_and_dataset_pickles(built):
    dm = DefocusDataModule(str(built), batch_size=2, crop_size=32, seed=0)
    loader = dm.train_dataloader()
    first, second = next(iter(loader)), next(iter(loader))
    assert not torch.equal(first["image"], second["image"])
    dataset = dm.datasets["train"]
    dataset[(0, 1)]  # opens the file in this process
    clone = pickle.loads(pickle.dumps(dataset))
    assert np.array_equal(clone[(0, 1)]["image"], dataset[(0, 1)]["image"])


def test_missing_or_wrong_file_names_it(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(UserError, match="nope.h5"):
        DefocusDataModule(str(missing)).setup("fit")
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f["image"] = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(UserError, match="wrong.h5"):
        DefocusDataModule(str(wrong)).setup("fit")
    with pytest.raises(UserError, match="mask_kind"):
        DefocusDataModule(str(wrong), mask_kind="soft")


@pytest.mark.parametrize("mask_kind", ["binary", "patch"])
def test_uint8_batches_for_the_gpu_convert_to_the_same_floats(built, mask_kind):
    plain = DefocusDataModule(str(built), batch_size=4, crop_size=32, mask_kind=mask_kind, pad_multiple=SIZE)
    on_gpu = DefocusDataModule(str(built), batch_size=4, crop_size=32, mask_kind=mask_kind, pad_multiple=SIZE)
    on_gpu.trainer = SimpleNamespace(world_size=1, strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    for name in ("train", "val"):
        want = next(iter(getattr(plain, f"{name}_dataloader")()))
        raw = next(iter(getattr(on_gpu, f"{name}_dataloader")()))
        assert raw["image"].dtype == torch.uint8 and raw["mask"].dtype == torch.uint8
        got = on_gpu.on_after_batch_transfer(raw, 0)
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), name


@pytest.mark.parametrize("mask_kind", ["binary", "patch"])
def test_collate_makes_the_float_batch_of_the_spec(built, mask_kind):
    """`collate` against the spec computed here from the samples' own uint8 maps (not through `to_float`)."""
    dm = DefocusDataModule(str(built), batch_size=2, crop_size=32, mask_kind=mask_kind, pad_multiple=SIZE)
    dm.setup("fit")
    samples = [dm.datasets["val"][i] for i in range(2)]
    batch = collate(samples)
    chw = lambda key: torch.from_numpy(np.stack([s[key] for s in samples]).astype(np.float64))  # noqa: E731
    colour = lambda key: (chw(key).permute(0, 3, 1, 2) / 127.5 - 1).float()  # noqa: E731
    grey = lambda key: chw(key)[:, None]  # noqa: E731
    mask_key = "patch" if mask_kind == "patch" else "mask"
    want = {
        "image": colour("image"),
        "target": colour("target"),
        "alt_target": colour("alt_target"),
        "mask": {0: 0.0, 128: 0.5, 255: 1.0},
        "depth_weight": (grey("weight") / 255).float(),
        "valid": grey("valid").float(),
        "focus": (grey("mask") == 0).float(),
    }
    for key in ("image", "target", "alt_target", "depth_weight", "valid", "focus"):
        assert batch[key].dtype == torch.float32 and batch[key].shape == want[key].shape, key
        assert torch.allclose(batch[key], want[key], atol=1e-6), key
    assert batch["image"].shape[1] == 3 and batch["image"].min() >= -1 and batch["image"].max() <= 1
    raw_mask = grey(mask_key)
    levels = set(raw_mask.unique().tolist())
    assert levels <= ({0, 128, 255} if mask_kind == "patch" else {0, 255}) and len(levels) > 1
    expected_mask = raw_mask.clone().apply_(lambda v: want["mask"][int(v)]).float()
    assert torch.equal(batch["mask"], expected_mask)
    assert batch["plane"].tolist() == [s["plane"] for s in samples] and batch["frame"].dtype == torch.long
    assert batch["has_alt"].dtype == torch.bool


def test_uint8_batches_option_overrides_the_trainer_choice(built):
    forced = DefocusDataModule(str(built), batch_size=4, crop_size=32, pad_multiple=SIZE, uint8_batches=True)
    assert next(iter(forced.train_dataloader()))["image"].dtype == torch.uint8
    floats = DefocusDataModule(str(built), batch_size=4, crop_size=32, pad_multiple=SIZE, uint8_batches=False)
    floats.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert next(iter(floats.train_dataloader()))["image"].dtype == torch.float32


def test_each_process_scores_its_own_validation_samples_once(built):
    """Two processes split the val samples without Lightning's padding repeats; the shorter share is evened out
    with a ghost sample that has no valid pixel (so no metric counts it); the fit loader is the train split at full
    frames."""
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    seen, lengths = [], []
    for rank in range(2):
        dm = DefocusDataModule(str(built), batch_size=1, crop_size=None, pad_multiple=SIZE)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, strategy=cpu)
        batches = list(dm.val_dataloader())
        lengths.append(len(batches))
        seen += [(int(b["frame"][0]), int(b["kind"][0]), int(b["plane"][0])) for b in batches if b["valid"].any()]
        assert all(not b["has_alt"].any() for b in batches if not b["valid"].any())
    single = DefocusDataModule(str(built), batch_size=1, crop_size=None, pad_multiple=SIZE)
    everything = [(int(b["frame"][0]), int(b["kind"][0]), int(b["plane"][0])) for b in single.val_dataloader()]
    assert sorted(seen) == sorted(everything) and len(set(everything)) == len(everything)
    assert lengths[0] == lengths[1] == -(-len(everything) // 2)
    fit = next(iter(single.fit_dataloader(limit=2)))
    assert fit["image"].shape[-2:] == (SIZE, SIZE) and fit["image"].shape[0] <= 2


def test_fitting_a_baseline_leaves_the_global_rng_alone(built):
    """Iterating the fit loader must not draw from torch's global RNG: a run that fits global_blur trains with the
    same dropout and augmentation draws as before it had the baseline."""
    dm = DefocusDataModule(str(built), batch_size=2, crop_size=None, pad_multiple=SIZE)
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    assert len(list(dm.fit_dataloader(limit=2))) == 1
    assert torch.equal(torch.rand(1), expected)


# ----- blur strengths: training targets rendered again at k times a strength drawn per sample ---------------------
STRENGTHS = (0.5, 2.0)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A dataset whose blur is rarely clamped (max_radius 12 px), so a larger strength shows as more blur; its 8
    training samples read their depth as metres and as disparity."""
    return build_synthetic(tmp_path_factory.mktemp("wide"), num=4, seed=2, max_radius=12.0, split=(0.5, 0.25, 0.25))


def _stored(path, index: int) -> dict:
    """Sample `index` of a built file as stored: its maps (H,W[,3]), per-sample values and the file's renderer."""
    with h5py.File(path) as f:
        return {name: f[name][index] for name in ("image", "target", "mask", "depth", "radius", "kind", "plane")} | {
            "mean_radius": f["mean_radius"][index],
            "renderer": json.loads(f.attrs["renderer"]),
        }


def _frame_samples_at(path, index: int, strength: float) -> FrameSamples:
    """What `frame_samples` renders for sample `index` of a built synthetic file with the file's renderer and its k
    times `strength`. A synthetic frame stores its metric depth; its kind "disparity" samples read that depth as
    disparity (`RGBDFrame.also_disparity`)."""
    stored = _stored(path, index)
    depth, kind = stored["depth"].astype(np.float32), KINDS[stored["kind"]]
    settings = RenderSettings(**stored["renderer"])
    samples, _ = frame_samples(
        stored["image"],
        depth if kind == "depth" else as_disparity(depth),
        kind,
        [PLANES[stored["plane"]]],
        replace(settings, k=settings.k * strength),
        SampleFilter(min_focus=0, max_focus=1, max_invalid=1),
    )
    return samples


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(C,H,W) -> (H,W,C), or (1,H,W) -> (H,W), as numpy."""
    return x.permute(1, 2, 0).numpy() if x.shape[0] == 3 else x[0].numpy()


def _unflip(sample_image: np.ndarray, stored_image: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The function that undoes a training sample's horizontal flip, found from its image (no jitter, whole frame)."""
    if np.array_equal(sample_image, stored_image):
        return lambda x: x
    assert np.array_equal(sample_image[:, ::-1], stored_image)
    return lambda x: x[:, ::-1]


def _detail(target: np.ndarray, mask: np.ndarray) -> float:
    """High-frequency energy of a (H,W,3) uint8 target where the mask is blurred: the mean squared difference of
    horizontal neighbours."""
    diff = np.diff(target.astype(np.float64), axis=1) ** 2
    return float(diff.sum(-1)[(mask[:, 1:] > 0) & (mask[:, :-1] > 0)].mean())


def test_strength_range_renders_the_training_target_as_frame_samples_does(wide):
    """A batch of all 8 training samples (whole frames, no jitter), as uint8 to compare bytes."""
    dm = DefocusDataModule(
        str(wide),
        batch_size=8,
        crop_size=None,
        photometric=False,
        strength_range=STRENGTHS,
        radius=True,
        seed=3,
        uint8_batches=True,
    )
    batch = next(iter(dm.train_dataloader()))
    strength = batch["strength"]
    assert strength.dtype == torch.float32 and strength.shape == (8,)
    assert ((strength >= STRENGTHS[0]) & (strength <= STRENGTHS[1])).all() and len(set(strength.tolist())) == 8
    with h5py.File(wide) as f:
        keys = list(zip(f["frame"][:], f["kind"][:], f["plane"][:]))
    compared = []  # the kind of each sample compared
    for i in range(8):
        index = keys.index((batch["frame"][i], batch["kind"][i], batch["plane"][i]))
        want, stored = _frame_samples_at(wide, index, strength[i].item()), _stored(wide, index)
        unflip = _unflip(_hwc(batch["image"][i]), stored["image"])
        assert np.array_equal(unflip(_hwc(batch["mask"][i])), stored["mask"])  # the network's mask stays the file's
        if not np.array_equal(want.mask[0], stored["mask"]):
            continue  # frame_samples masks the float16 depth again: a pixel may cross the threshold (1 sample here)
        assert np.array_equal(unflip(_hwc(batch["target"][i])), want.target[0])
        assert not np.array_equal(want.target[0], stored["target"])
        assert np.array_equal(unflip(_hwc(batch["radius"][i])), want.radius[0])
        assert batch["mean_radius"][i].item() == pytest.approx(want.mean_radius[0], abs=1e-5)
        compared.append(int(stored["kind"]))
    assert len(compared) >= 7 and set(compared) == {0, 1}  # the depth read as metres and as disparity
    dataset = dm.datasets["train"]
    draws = [dataset[(0, seed)]["strength"] for seed in (1, 1, 2)]
    assert draws[0] == draws[1] != draws[2]  # drawn from the sample's seed
    assert torch.equal(batch["amount"], batch["mean_radius"])  # every sample told the rendered target's amount


def test_strength_one_gives_back_the_stored_targets(built):
    """Rendered again at strength 1, every training sample (its depth read as metres or as disparity) is the one
    `data build` rendered, but for the depth stored as float16."""
    dm = DefocusDataModule(str(built), crop_size=None, photometric=False, strength_range=(1 - 1e-6, 1 + 1e-6))
    dm.setup("fit")
    dataset = dm.datasets["train"]
    kinds = set()
    for position, index in enumerate(dataset.indices):
        sample, stored = dataset[(position, position)], _stored(built, index)
        unflip = _unflip(sample["image"], stored["image"])
        assert np.abs(unflip(sample["target"]).astype(int) - stored["target"]).mean() < 0.1
        assert sample["mean_radius"] == pytest.approx(stored["mean_radius"], abs=0.01)
        kinds.add(int(stored["kind"]))
    assert kinds == {0, 1}


def test_a_larger_strength_blurs_more_and_a_smaller_one_less(wide):
    def samples(strength_range):
        dm = DefocusDataModule(str(wide), crop_size=None, photometric=False, strength_range=strength_range)
        dm.setup("fit")
        dataset = dm.datasets["train"]
        return [(index, dataset[(position, 0)]) for position, index in enumerate(dataset.indices)]

    for (index, blurrier), (_, sharper) in zip(samples((2.0, 3.0)), samples((0.3, 0.5))):
        stored = _stored(wide, index)
        assert blurrier["strength"] > 1 > sharper["strength"]
        assert blurrier["mean_radius"] > stored["mean_radius"] > sharper["mean_radius"]
        detail = _detail(stored["target"], stored["mask"])
        assert _detail(blurrier["target"], blurrier["mask"]) < detail < _detail(sharper["target"], sharper["mask"])


def test_without_a_strength_range_samples_are_as_stored_at_strength_one(built):
    plain = DefocusDataModule(str(built), batch_size=4, crop_size=None, photometric=False, radius=True)
    ranged = DefocusDataModule(str(built), batch_size=4, crop_size=32, strength_range=STRENGTHS)
    for batch in (next(iter(plain.train_dataloader())), next(iter(plain.val_dataloader()))):
        assert batch["strength"].dtype == torch.float32 and (batch["strength"] == 1).all()
    plain.setup("fit")
    dataset = plain.datasets["train"]
    for position in range(4):
        sample, stored = dataset[(position, 7)], _stored(built, dataset.indices[position])
        unflip = _unflip(sample["image"], stored["image"])
        assert np.array_equal(unflip(sample["target"]), stored["target"])
        assert np.array_equal(unflip(sample["radius"]), stored["radius"].astype(np.float32))
        assert np.array_equal(unflip(sample["valid"]), (stored["depth"] != 0).astype(np.uint8))
        assert sample["mean_radius"] == stored["mean_radius"] and sample["strength"] == 1.0
    # the strengths take their own draws: a sample's crop, flip and jitter are those it has without them
    cropped = DefocusDataModule(str(built), crop_size=32)
    cropped.setup("fit")
    ranged.setup("fit")
    for position in range(4):
        a, b = cropped.datasets["train"][(position, 11)], ranged.datasets["train"][(position, 11)]
        assert all(np.array_equal(a[key], b[key]) for key in ("image", "mask", "weight", "valid"))
    # validation and test stay as stored
    for name in ("val", "test"):
        a, b = next(iter(getattr(plain, f"{name}_dataloader")())), next(iter(getattr(ranged, f"{name}_dataloader")()))
        assert all(torch.equal(a[key], b[key]) for key in ("image", "target", "mask", "strength")), name


def test_strength_range_needs_a_thin_lens_dataset_and_lo_below_hi(built, tmp_path):
    path = tmp_path / "blur_map.h5"
    shutil.copy(built, path)
    with h5py.File(path, "r+") as f:
        f.attrs["renderer"] = json.dumps(RenderSettings(blur_model="blur_map").to_dict())
    DefocusDataModule(str(path)).setup("fit")  # without strengths the file serves as before
    with pytest.raises(
        UserError, match=rf"data\.strength_range: needs a dataset rendered with .*{path.name} uses blur_map"
    ):
        DefocusDataModule(str(path), strength_range=STRENGTHS).setup("fit")
    for bad in ((2.0, 1.0), (0.0, 1.0), (1.0,)):
        with pytest.raises(UserError, match="strength_range"):
            DefocusDataModule(str(built), strength_range=bad)


# ----- the amount of blur the generator is told ---------------------------------------------------------------
def test_every_sample_carries_its_target_amount_and_a_crop_its_own(built):
    """Whole frames: the amount is the stored mean radius out of focus, in every split; a crop: the mean of the
    stored radius over the crop's blurred pixels."""
    whole = DefocusDataModule(str(built), batch_size=4, crop_size=None, photometric=False)
    for batch in (next(iter(whole.train_dataloader())), next(iter(whole.val_dataloader()))):
        assert batch["amount"].dtype == torch.float32 and torch.equal(batch["amount"], batch["mean_radius"])
    cropped = DefocusDataModule(str(built), crop_size=32, photometric=False)
    cropped.setup("fit")
    dataset = cropped.datasets["train"]
    for position in range(4):
        sample, stored = dataset[(position, 5)], _stored(built, dataset.indices[position])
        assert "radius" not in sample  # read for the amount only, not served
        h, w = stored["mask"].shape
        rng = np.random.default_rng(5)  # the crop window a sample's seed draws (DefocusDataset._train_maps)
        top, left = int(rng.integers(0, h - 31)), int(rng.integers(0, w - 31))
        mask, radius = (stored[key][top : top + 32, left : left + 32] for key in ("mask", "radius"))
        want = radius.astype(np.float64)[mask > 0].mean() if (mask > 0).any() else 0.0
        assert sample["amount"] == pytest.approx(want, abs=1e-3)


def test_a_share_of_training_samples_is_told_no_amount(built, wide):
    """unknown_amount: that share of the training samples (drawn from each sample's seed) is told no amount (it
    still carries its target's, for the losses); validation is always told. With strengths, an untold sample keeps
    its stored target (strength 1)."""
    dm = DefocusDataModule(str(built), crop_size=None, photometric=False, unknown_amount=0.5)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    told = [dataset[(0, seed)]["amount_told"] for seed in range(200)]
    assert 60 < sum(told) < 140
    assert told == [dataset[(0, seed)]["amount_told"] for seed in range(200)]  # the seed decides
    assert {dataset[(0, seed)]["amount"] for seed in range(5)} == {dataset.mean_radius[dataset.indices[0]]}
    val = next(iter(dm.val_dataloader()))
    assert val["amount_told"].dtype == torch.bool and val["amount_told"].all()
    for share, expect_told in ((0.0, True), (1.0, False)):
        ranged = DefocusDataModule(
            str(wide), crop_size=None, photometric=False, unknown_amount=share, strength_range=STRENGTHS
        )
        ranged.setup("fit")
        sample = ranged.datasets["train"][(0, 3)]
        assert sample["amount_told"] == expect_told
        assert (sample["strength"] != 1.0) == expect_told
    with pytest.raises(UserError, match="unknown_amount"):
        DefocusDataModule(str(built), unknown_amount=1.5)


def test_patch_split_moves_the_line_between_partial_and_full_blur(built):
    """patch_split (lo, hi): each training sample's blurred pixels are split again at a plane level drawn in the
    range (the seed decides); the in-focus pixels, the amount and validation stay as stored."""
    plain = DefocusDataModule(str(built), crop_size=None, photometric=False, mask_kind="patch")
    split = DefocusDataModule(str(built), crop_size=None, photometric=False, mask_kind="patch", patch_split=(90, 220))
    for dm in (plain, split):
        dm.setup("fit")
    stored, moved = plain.datasets["train"][(0, 1)], split.datasets["train"][(0, 1)]
    assert ((stored["patch"] == 0) == (moved["patch"] == 0)).all()
    assert stored["amount"] == moved["amount"]
    samples = [split.datasets["train"][(0, seed)] for seed in range(6)]
    shares = []
    for sample in samples:  # partial blur below the line, full blur above it, wherever the line is
        plane, patch = 255 - sample["weight"].astype(np.float32), sample["patch"]
        partial, full = plane[patch == 128], plane[patch == 255]
        assert partial.max() < full.min() and 90 <= full.min() and partial.max() < 220
        shares.append(partial.size / (partial.size + full.size))
    assert len(set(shares)) > 1  # the line moves from seed to seed
    line = [sample["patch"] for sample in samples]
    again = [split.datasets["train"][(0, seed)]["patch"] for seed in range(6)]
    assert all((a == b).all() for a, b in zip(line, again))
    val_plain, val_split = plain.datasets["val"][0], split.datasets["val"][0]
    assert (val_plain["patch"] == val_split["patch"]).all()
    with pytest.raises(UserError, match=r"patch_split=\[150, 90\]"):
        DefocusDataModule(str(built), mask_kind="patch", patch_split=(150, 90))
