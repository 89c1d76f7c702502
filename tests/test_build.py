"""`defocus-lit data build|info` and build_dataset: layout, splits, filters, bad input, interrupts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest
from PIL import Image

from defocus_lit.cli import main
from defocus_lit.data import build
from defocus_lit.data.build import assign_splits, build_dataset
from defocus_lit.data.frames import RGBDFrame, RGBDSource
from defocus_lit.data.hdf5 import read_info
from defocus_lit.data.planes import PAPER_PLANES, SampleFilter
from defocus_lit.data.samples import as_disparity, fit_frame, frame_samples
from defocus_lit.data.sources import open_source
from defocus_lit.errors import UserError
from defocus_lit.render import RenderSettings

SIZE = 64
FAST = RenderSettings(layers=4, max_radius=4.0)
FAST_ARGS = ["--layers", "4", "--max-radius", "4", "--quiet"]


class ListSource(RGBDSource):
    """Frames given as a list (for exact filter and split outcomes)."""

    kind_name = "test"

    def __init__(self, frames: list[RGBDFrame]):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def _read(self, index: int) -> RGBDFrame:
        return self.frames[index]

    def attrs(self) -> dict:
        return {"source": self.kind_name, "num": len(self.frames)}


def _ramp(seed: int, split: str | None = None) -> RGBDFrame:
    """Depth rising 1..5 m left to right: each of fore, mid and back has ~1/4 of the frame in focus (kept)."""
    rng = np.random.default_rng(seed)
    depth = np.broadcast_to(np.linspace(1, 5, SIZE, dtype=np.float32), (SIZE, SIZE)).copy()
    return RGBDFrame(f"ramp{seed}", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), depth, "depth", split)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["data", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".h5", ".tmp"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("build") / "d.h5"
    summary = build_dataset(
        open_source("synthetic", num=10, size=(SIZE, SIZE), seed=2),
        path,
        settings=FAST,
        split=(0.6, 0.2, 0.2),
        progress=False,
    )
    return path, summary


def test_layout_dtypes_and_attributes(built):
    path, summary = built
    with h5py.File(path) as f:
        n = f["image"].shape[0]
        assert n == summary["num_samples"] > 0
        for name, dtype, shape in (
            ("image", np.uint8, (n, SIZE, SIZE, 3)),
            ("target", np.uint8, (n, SIZE, SIZE, 3)),
            ("mask", np.uint8, (n, SIZE, SIZE)),
            ("patch_mask", np.uint8, (n, SIZE, SIZE)),
            ("depth_weight", np.uint8, (n, SIZE, SIZE)),
            ("depth", np.float16, (n, SIZE, SIZE)),
            ("plane", np.uint8, (n,)),
            ("frame", np.int32, (n,)),
            ("split", np.uint8, (n,)),
            ("mean_radius", np.float32, (n,)),
            ("source", np.uint8, (n,)),
            ("kind", np.uint8, (n,)),
        ):
            assert f[name].dtype == dtype and f[name].shape == shape, name
            if len(shape) > 1:
                assert f[name].chunks == (1, *shape[1:]), name  # one chunk per sample
        mask, patch, weight = f["mask"][:], f["patch_mask"][:], f["depth_weight"][:]
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(patch)) <= {0, 128, 255}
        assert np.array_equal(patch == 0, mask == 0)
        assert weight[mask == 0].min() > 255 * (1 - 60 / 255) - 1 >= weight[mask == 255].max() - 1
        assert (f["depth"][:] > 0).all() and set(np.unique(f["plane"][:])) <= {0, 1, 2}
        assert (f["mean_radius"][:] > 0).all() and (f["mean_radius"][:] <= FAST.max_radius).all()
        assert not np.array_equal(f["image"][:], f["target"][:])
        assert (f["source"][:] == 0).all()  # a single source is source 0 of weight 1
        attrs = {k: f.attrs[k] for k in f.attrs}
    assert json.loads(attrs["renderer"]) == FAST.to_dict()
    assert json.loads(attrs["source"])["num"] == 10 and json.loads(attrs["planes"]) == ["fore", "mid", "back"]
    assert attrs["depth_kind"] == "mixed" and attrs["version"]  # outdoor scenes are read as disparity too
    assert json.loads(attrs["split_sizes"]) == summary["samples"]
    assert json.loads(attrs["filter_counts"]) == summary["filtered"]
    assert set(summary["filtered"]) == {"no_focus", "focus_too_small", "mostly_in_focus", "invalid_depth"}
    outdoor = sum(frame.also_disparity for frame in open_source("synthetic", num=10, size=(SIZE, SIZE), seed=2))
    assert outdoor > 0 and sum(summary["filtered"].values()) + n == 3 * (10 + outdoor)  # 3 planes per reading
    assert json.loads(attrs["settings"])["size"] == [SIZE, SIZE]
    assert json.loads(attrs["sources"]) == [{"name": "synthetic", "path": None, "weight": 1.0, "frames": 10}]


def test_splits_assign_whole_frames(built):
    path, summary = built
    with h5py.File(path) as f:
        frame, split = f["frame"][:], f["split"][:]
    for fr in np.unique(frame):
        assert len(np.unique(split[frame == fr])) == 1
    assert all(summary["samples"][s] > 0 for s in ("train", "val", "test"))
    assert summary["frames"] == {"train": 6, "val": 2, "test": 2}


def test_official_split_is_kept_and_val_comes_from_train():
    frames = {i: ("test" if i % 3 == 0 else "train") for i in range(30)}
    codes = assign_splits(frames, (0.8, 0.1, 0.1), seed=0)
    assert all(codes[i] == 2 for i in frames if frames[i] == "test")
    train = [i for i in frames if frames[i] == "train"]
    assert sum(codes[i] == 1 for i in train) == 2 and all(codes[i] in (0, 1) for i in train)
    assert codes == assign_splits(frames, (0.8, 0.1, 0.1), seed=0) != assign_splits(frames, (0.8, 0.1, 0.1), seed=1)


def test_build_with_official_split(tmp_path):
    source = ListSource([_ramp(i, "test" if i < 2 else "train") for i in range(6)])
    summary = build_dataset(source, tmp_path / "o.h5", settings=FAST, progress=False, workers=0)
    with h5py.File(tmp_path / "o.h5") as f:
        frame, split = f["frame"][:], f["split"][:]
    assert set(split[frame < 2]) == {2} and set(split[frame >= 2]) <= {0, 1}
    assert summary["frames"] == {"train": 3, "val": 1, "test": 2}


def test_filter_counts_by_reason(tmp_path):
    flat = RGBDFrame("flat", np.zeros((SIZE, SIZE, 3), np.uint8), np.full((SIZE, SIZE), 2.0, np.float32), "depth")
    holes = _ramp(9)
    holes.depth[:, : SIZE * 3 // 4] = 0  # 75 % unmeasured
    source = ListSource([_ramp(0), flat, _ramp(1), holes, _ramp(2)])
    summary = build_dataset(source, tmp_path / "f.h5", settings=FAST, sample_filter=SampleFilter(), progress=False)
    # flat depth: fore and mid are in focus everywhere, back nowhere
    assert summary["filtered"] == {"no_focus": 1, "focus_too_small": 0, "mostly_in_focus": 2, "invalid_depth": 3}
    assert summary["num_samples"] == 9
    assert read_info(tmp_path / "f.h5")["filter_counts"] == summary["filtered"]


def test_cli_fore_only_and_summary_line(tmp_path, capsys):
    out = tmp_path / "fore.h5"
    rc, stdout, _ = _run(
        capsys,
        "build",
        "--source",
        "synthetic",
        "--num",
        "4",
        "--size",
        f"{SIZE}x{SIZE}",
        "--planes",
        "fore",
        "--out",
        str(out),
        *FAST_ARGS,
    )
    assert rc == 0
    assert len(stdout.strip().splitlines()) == 1 and str(out) in stdout and "train" in stdout
    with h5py.File(out) as f:
        assert set(f["plane"][:]) == {0} and json.loads(f.attrs["planes"]) == ["fore"]
    assert _leftovers(tmp_path) == ["fore.h5"]


def test_info_text_and_json(built, capsys):
    path, summary = built
    rc, text, _ = _run(capsys, "info", str(path))
    assert rc == 0
    for word in (str(path), f"{SIZE}x{SIZE}", "train", "val", "test", "fore", "thin_lens", "synthetic", "filtered"):
        assert word in text
    rc, text, _ = _run(capsys, "info", str(path), "--json")
    info = json.loads(text)
    assert rc == 0 and info["num_samples"] == summary["num_samples"] and info["size"] == [SIZE, SIZE]
    assert {k: v["samples"] for k, v in info["splits"].items()} == summary["samples"]
    assert info["renderer"] == FAST.to_dict() and info["source"]["source"] == "synthetic"


def _write_pair(folder, name, image_hw, depth_hw):
    image = np.random.default_rng(0).integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f"{name}.png")
    depth = np.broadcast_to(np.linspace(1000, 5000, depth_hw[1]).astype(np.uint16), depth_hw).copy()
    Image.fromarray(depth).save(folder / f"{name}_depth.png")
    return f"{name}.png,{name}_depth.png\n"


@pytest.mark.parametrize("case", ["no_path", "unknown_source", "missing_file", "size_mismatch"])
def test_bad_input_exits_2_naming_it_and_writes_nothing(tmp_path, capsys, case):
    csv = tmp_path / "m.csv"
    if case == "missing_file":
        csv.write_text("image,depth\n" + _write_pair(tmp_path, "a", (32, 32), (32, 32)) + "b.png,b_depth.png\n")
        args, name = ["--source", "manifest", "--path", str(csv)], "b.png"
    elif case == "size_mismatch":
        csv.write_text("image,depth\n" + _write_pair(tmp_path, "a", (32, 32), (24, 24)))
        args, name = ["--source", "manifest", "--path", str(csv)], "a_depth.png"
    elif case == "no_path":
        args, name = ["--source", "nyu-mat"], "path"
    else:
        args, name = ["--source", "kinect"], "kinect"
    rc, stdout, err = _run(capsys, "build", *args, "--out", str(tmp_path / "d.h5"), *FAST_ARGS)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and name in errors[0], err
    assert _leftovers(tmp_path) == [] and stdout == ""


def test_info_bad_files_exit_2(tmp_path, capsys):
    (tmp_path / "text.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["image"] = np.zeros((1, 4, 4, 3), np.uint8)
    for name in ("missing.h5", "text.h5", "other.h5"):
        rc, _, err = _run(capsys, "info", str(tmp_path / name))
        assert rc == 2 and err.startswith("error:") and name in err and len(err.strip().splitlines()) == 1
        with pytest.raises(UserError, match=name):
            read_info(tmp_path / name)


def test_frames_of_different_sizes_are_fitted(tmp_path, capsys):
    csv = tmp_path / "m.csv"
    csv.write_text(
        "image,depth\n"
        + _write_pair(tmp_path, "a", (40, 60), (40, 60))
        + _write_pair(tmp_path, "b", (50, 30), (50, 30))
    )
    rc, _, err = _run(
        capsys,
        "build",
        "--source",
        "manifest",
        "--path",
        str(csv),
        "--size",
        "32x48",
        "--out",
        str(tmp_path / "d.h5"),
        "--val-frac",
        "0",
        "--test-frac",
        "0",
        *FAST_ARGS,
    )
    assert rc == 0, err
    assert read_info(tmp_path / "d.h5")["size"] == [32, 48]
    image, depth = fit_frame(np.zeros((40, 60, 3), np.uint8), np.ones((40, 60), np.float32), (256, 256))
    assert image.shape == (256, 256, 3) and depth.shape == (256, 256)
    assert build._output_size(
        RGBDFrame("a", image[:40, :60], depth[:40, :60], "depth"), open_source("manifest", str(csv)), None
    ) == (256, 256)


class _SigtermOnCollect:
    """Sends SIGTERM from a `__del__`: Python drops the KeyboardInterrupt the handler raises there."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(10))  # the handler runs between these bytecodes, inside the callback


def _interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("on_third_frame", "dropped"),
    [(_interrupt, []), (_SigtermOnCollect, [KeyboardInterrupt])],
    ids=["ctrl-c", "sigterm-dropped-in-a-callback"],
)
def test_interrupt_inside_the_loop_leaves_nothing(tmp_path, capsys, monkeypatch, on_third_frame, dropped):
    """Ctrl-C, or a SIGTERM whose KeyboardInterrupt Python drops because it lands in a `__del__` (the build must
    still stop at the next frame): status 130, no file, the SIGTERM handler restored."""
    calls, unraisable = [], []
    real = build._process

    def interrupted(job, index):
        calls.append(index)
        if len(calls) == 3:
            on_third_frame()
        return real(job, index)

    monkeypatch.setattr(build, "_process", interrupted)
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    rc, _, err = _run(
        capsys,
        "build",
        "--source",
        "synthetic",
        "--num",
        "8",
        "--size",
        f"{SIZE}x{SIZE}",
        "--out",
        str(tmp_path / "d.h5"),
        "--workers",
        "0",
        *FAST_ARGS,
    )
    assert [u.exc_type for u in unraisable] == dropped
    assert rc == 130 and "interrupted" in err
    assert len(calls) <= 4 and _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_error_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def broken(self):
        raise OSError("disk full")

    monkeypatch.setattr(build._Writer, "flush", broken)
    with pytest.raises(OSError, match="disk full"):
        build_dataset(
            open_source("synthetic", num=2, size=(SIZE, SIZE)),
            tmp_path / "d.h5",
            settings=FAST,
            progress=False,
            workers=0,
        )
    assert _leftovers(tmp_path) == []


def test_sigterm_stops_a_build_cleanly(tmp_path):
    out = tmp_path / "d.h5"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "defocus_lit.cli",
            "data",
            "build",
            "--source",
            "synthetic",
            "--num",
            "1000000",  # more than any machine renders in the second below (5000 finished first on 16 cores)
            "--size",
            "96x96",
            "--out",
            str(out),
            *FAST_ARGS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not any(p.suffix == ".tmp" for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the loop
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    assert _leftovers(tmp_path) == []
    assert not os.path.exists(out)


def test_kill_9_leaves_nothing_behind_a_rerun(tmp_path):
    """SIGKILL gives the build no chance to clean up: its temporary file stays until the next write beside it,
    which removes it (its process is gone) and leaves only the finished file."""
    out = tmp_path / "d.h5"
    argv = [sys.executable, "-m", "defocus_lit.cli", "data", "build", "--source", "synthetic", "--out", str(out)]
    proc = subprocess.Popen(
        [*argv, "--num", "1000000", "--size", "96x96", "--workers", "0", *FAST_ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not any(p.suffix == ".tmp" for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(1.0)  # inside the loop, the HDF5 temporary half written
        proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)  # reaped: its pid no longer names a process
    assert proc.returncode == -signal.SIGKILL
    assert [p.suffix for p in tmp_path.iterdir()] == [".tmp"] and not out.exists()
    rerun = subprocess.run([*argv, "--num", "4", "--size", "32x32", *FAST_ARGS], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _leftovers(tmp_path) == ["d.h5"] and read_info(out)["source_frames"] == 4


def test_random_focal_plane_is_seeded_per_frame_and_left_out_of_scoring(tmp_path):
    """`random` adds a sample per frame focused at a grey level drawn from (seed, frame): the same build gives the
    same planes, another seed others; validation, test and the baselines' fit see the paper's planes only."""
    from defocus_lit.data.datamodule import DefocusDataModule
    from defocus_lit.data.planes import PLANES

    frames = ListSource([_ramp(i) for i in range(10)])
    random = PLANES.index("random")
    masks = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build_dataset(
            frames, tmp_path / f"{name}.h5", planes=("fore", "random"), settings=FAST, seed=seed, progress=False
        )
        with h5py.File(tmp_path / f"{name}.h5") as f:
            chosen = f["plane"][:] == random
            assert set(f["plane"][:]) == {0, random} and chosen.sum() >= 5
            masks.append(f["mask"][np.flatnonzero(chosen)[:3]])
    np.testing.assert_array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[0], masks[2])
    dm = DefocusDataModule(str(tmp_path / "a.h5"), crop_size=32, pad_multiple=16)
    dm.setup()
    for name in ("val", "test", "fit"):
        assert all(dm.datasets[name].plane[i] != random for i in dm.datasets[name].indices)
    assert any(dm.datasets["train"].plane[i] == random for i in dm.datasets["train"].indices)


def test_a_frame_also_read_as_disparity_gets_both_renderings_in_its_split(tmp_path):
    """`also_disparity` (the synthetic outdoor scenes): after the samples from the metric depth come the same
    planes rendered from 1/depth read as relative disparity; both sets are the frame's, so they share its split."""
    settings = RenderSettings(layers=4)
    plain = [_ramp(i) for i in range(6)]
    for name, frames in (("plain", plain), ("both", [replace(f, also_disparity=True) for f in plain])):
        build_dataset(ListSource(frames), tmp_path / f"{name}.h5", settings=settings, seed=3, progress=False)
    with h5py.File(tmp_path / "plain.h5") as a, h5py.File(tmp_path / "both.h5") as b:
        assert a.attrs["depth_kind"] == "depth" and b.attrs["depth_kind"] == "mixed"
        frame, split = b["frame"][:], b["split"][:]
        for i, source_frame in enumerate(plain):
            rows = np.flatnonzero(frame == i)
            assert len(set(split[rows])) == 1
            metric = a["target"][np.flatnonzero(a["frame"][:] == i)]
            np.testing.assert_array_equal(b["target"][rows[: len(metric)]], metric)
            depth = as_disparity(source_frame.depth)
            twin, _ = frame_samples(source_frame.image, depth, "disparity", PAPER_PLANES, settings, SampleFilter())
            assert len(rows) == len(metric) + len(twin.plane) > len(metric)
            np.testing.assert_array_equal(b["target"][rows[len(metric) :]], twin.target)
            np.testing.assert_allclose(b["mean_radius"][rows[len(metric) :]], twin.mean_radius)
            assert list(b["kind"][rows]) == [0] * len(metric) + [1] * len(twin.plane)  # KINDS: depth, disparity
            # focused on the near end, the far end of a 1-5 m ramp blurs twice as much read as disparity (14 vs 7 px)
            assert twin.plane[0] == 0 and twin.mean_radius[0] > 2 * a["mean_radius"][a["frame"][:] == i][0]


def test_as_disparity_inverts_depth_and_keeps_unmeasured_pixels():
    np.testing.assert_array_equal(as_disparity(np.array([[2.0, 0.0], [0.5, np.nan]], np.float32)), [[0.5, 0], [2, 0]])
