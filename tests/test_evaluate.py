"""`defocus-lit evaluate`: reports on a built dataset and on a manifest, baselines alone, and bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defocus_lit.cli import main

METHODS = {"model", "identity", "mask_blur"}
METRICS = {"psnr", "ssim", "psnr_focus", "psnr_defocus", "plane_sensitivity"}


@pytest.fixture
def dataset(tiny_checkpoint) -> Path:
    return next((tiny_checkpoint.parent / "data").glob("*.h5"))


def manifest(folder: Path, frames: int = 2, columns: str = "image,depth,kind,scale") -> Path:
    """Frames 48x72: a near square (1 m), a middle band (2 m), a far wall (4 m) with a few unmeasured pixels."""
    rng = np.random.default_rng(0)
    rows = [columns]
    for i in range(frames):
        depth = np.full((48, 72), 4000, np.uint16)
        depth[20:, :] = 2000
        depth[8 + i : 30 + i, 10:36] = 1000
        depth[:3, :5] = 0
        Image.fromarray(depth).save(folder / f"scene{i}_depth.png")
        Image.fromarray(rng.integers(0, 256, (48, 72, 3), dtype=np.uint8)).save(folder / f"scene{i}_rgb.png")
        rows.append(f"scene{i}_rgb.png,scene{i}_depth.png,depth,0.001")
    path = folder / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def load_report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    assert len(list(out.glob("*.png"))) == len(report["samples"]) > 0
    for sample in report["samples"]:
        assert (out / sample["image"]).is_file()
    return report


def test_dataset_report_scores_model_and_baselines(tiny_checkpoint, dataset, tmp_path):
    out = tmp_path / "report"
    assert main(["evaluate", "--ckpt", str(tiny_checkpoint), "--data", str(dataset), "--out", str(out)]) == 0
    report = load_report(out)
    assert set(report["mean"]) == METHODS
    assert all(set(values) == METRICS for values in report["mean"].values())
    for sample in report["samples"]:
        assert sample["plane"] in ("fore", "mid", "back") and sample["name"]
        assert all(set(sample[m]) == METRICS for m in METHODS)
        if sample["identity"]["plane_sensitivity"] is not None:  # a fore/back pair: the input ignores the mask
            assert sample["identity"]["plane_sensitivity"] == 0
    assert report["mean"]["identity"]["psnr"] > 0
    md = (out / "report.md").read_text()
    assert all(f"| {m} |" in md for m in METHODS) and "## Samples" in md
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no staging folder left


def test_baseline_alone_with_limit_replaces_an_earlier_report(dataset, tmp_path):
    out = tmp_path / "report"
    for baseline in ("identity", "mask_blur"):
        assert (
            main(["evaluate", "--baseline", baseline, "--data", str(dataset), "--out", str(out), "--limit", "1"]) == 0
        )
        report = load_report(out)
        assert set(report["mean"]) == {baseline} and len(report["samples"]) == 1


def test_manifest_renders_targets_and_resizes_large_frames(tiny_checkpoint, tmp_path):
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--ckpt",
                str(tiny_checkpoint),
                "--manifest",
                str(manifest(tmp_path)),
                "--out",
                str(out),
                "--max-side",
                "40",
            ]
        )
        == 0
    )
    report = load_report(out)
    assert set(report["mean"]) == METHODS
    assert {s["name"] for s in report["samples"]} == {"scene0", "scene1"}
    assert report["mean"]["model"]["plane_sensitivity"] is not None
    with Image.open(out / report["samples"][0]["image"]) as panel:  # 48x72 -> 27x40, five captioned tiles
        assert panel.size == (5 * 40, 27 + 14)


def test_baseline_on_manifest_takes_renderer_flags(tmp_path):
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--baseline",
                "mask_blur",
                "--manifest",
                str(manifest(tmp_path, frames=1)),
                "--out",
                str(out),
                "--k",
                "10",
                "--max-radius",
                "4",
            ]
        )
        == 0
    )
    report = load_report(out)
    assert report["settings"]["renderer"]["k"] == 10 and report["settings"]["renderer"]["max_radius"] == 4


# ----- bad input: one line `error: ...` naming the file or flag, exit 2, no partial folder ---------------------
def _assert_one_line_error(capsys, name: str) -> None:
    """stderr ends with one `error: ...` line naming `name` (a progress bar may come before it), no traceback."""
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("error: ") and name in err.splitlines()[-1], err
    assert err.count("error: ") == 1 and "Traceback" not in err, err


def test_manifest_without_depth_column(tmp_path, capsys):
    bad = manifest(tmp_path, frames=1, columns="image,disparity,kind,scale")
    out = tmp_path / "report"
    assert main(["evaluate", "--baseline", "identity", "--manifest", str(bad), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "manifest.csv")
    assert not out.exists() and not list(tmp_path.glob(".report*"))


def test_bad_checkpoints(tiny_checkpoint, dataset, tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    for ckpt in (text, truncated):
        out = tmp_path / "report"
        assert main(["evaluate", "--ckpt", str(ckpt), "--data", str(dataset), "--out", str(out)]) == 2
        _assert_one_line_error(capsys, ckpt.name)
        assert not out.exists()


def test_renderer_flags_with_a_dataset_and_foreign_out_folder(dataset, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--baseline", "identity", "--data", str(dataset), "--out", str(out), "--k", "5"]) == 2
    _assert_one_line_error(capsys, "--k")
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    assert main(["evaluate", "--baseline", "identity", "--data", str(dataset), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, str(out))
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_manifest_whose_planes_are_all_filtered(tmp_path, capsys):
    Image.fromarray(np.full((24, 24), 2000, np.uint16)).save(tmp_path / "flat_depth.png")  # one depth: no planes
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(tmp_path / "flat_rgb.png")
    (tmp_path / "manifest.csv").write_text("image,depth\nflat_rgb.png,flat_depth.png\n")
    out = tmp_path / "report"
    assert (
        main(["evaluate", "--baseline", "identity", "--manifest", str(tmp_path / "manifest.csv"), "--out", str(out)])
        == 2
    )
    _assert_one_line_error(capsys, "manifest.csv")
    assert not out.exists() and not list(tmp_path.glob(".report*"))
