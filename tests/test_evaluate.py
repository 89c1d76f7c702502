"""`defocus-lit evaluate`: reports on a built dataset and on a manifest, baselines alone, and bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defocus_lit.cli import main

METHODS = {"model", "model_told_amount", "identity", "mask_blur", "global_blur", "oracle_blur"}
METRICS = {"psnr", "ssim", "psnr_focus", "psnr_defocus", "plane_sensitivity", "depth_gain", "oracle_gap"}


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
    panels = [p for p in out.glob("*.png") if p.name != "blur_amount.png"]
    assert len(panels) == len(report["samples"]) > 0
    assert (out / "blur_amount.png").is_file() == ("blur_amount" in report)
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
    model, mean = report["mean"]["model"], report["mean"]
    assert model["depth_gain"] == pytest.approx(model["psnr_defocus"] - mean["global_blur"]["psnr_defocus"])
    assert model["oracle_gap"] == pytest.approx(model["psnr_defocus"] - mean["oracle_blur"]["psnr_defocus"])
    assert mean["identity"]["depth_gain"] is None  # gains are the model's
    # the oracle knows each target: no uniform blur does better, the image-blind fitted one not at all
    assert mean["oracle_blur"]["psnr_defocus"] >= mean["global_blur"]["psnr_defocus"]
    assert mean["oracle_blur"]["psnr_defocus"] >= mean["mask_blur"]["psnr_defocus"] - 0.5
    radii = report["settings"]["global_blur"]
    assert set(radii) == {"0.5", "1.0"} and all(r > 0 for r in radii.values())
    md = (out / "report.md").read_text()
    assert all(f"| {m} |" in md for m in METHODS) and "## Samples" in md
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no staging folder left


def test_amount_of_blur_per_sample_told_and_guessed(tiny_checkpoint, tmp_path, capsys):
    """Per sample the target's amount of blur (the renderer's mean radius out of focus, which mask_blur is told), the
    model's guess and the model told the target's, in percent of the long side; over the samples how each follows
    the target's, and the plot of one against the other."""
    out = tmp_path / "report"
    args = ["evaluate", "--ckpt", str(tiny_checkpoint), "--manifest", str(manifest(tmp_path)), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "The model's guess:" in printed and "The model told the target's: median ratio" in printed
    report = load_report(out)
    top = 100 * report["settings"]["renderer"]["max_radius"] / 72  # the frames' long side
    for sample in report["samples"]:
        amount = sample["amount"]
        assert set(amount) == {"target", "asked", "model", "model_told_amount"} and amount["asked"] is None
        assert 0 <= amount["model"] <= top and 0 <= amount["model_told_amount"] <= top and 0 < amount["target"] <= top
    amount = report["blur_amount"]
    targets = np.array([s["amount"]["target"] for s in report["samples"]])
    assert amount["target"]["mean"] == pytest.approx(targets.mean())
    for name in ("model", "model_told_amount"):
        values = np.array([s["amount"][name] for s in report["samples"]])
        assert amount[name]["asked"] is None and amount[name]["mean"] == pytest.approx(values.mean())
        assert amount[name]["median_ratio"] == pytest.approx(np.median(values / targets))
        assert amount[name]["median_error"] == pytest.approx(np.median(np.abs(values / targets - 1)))
        assert amount[name]["correlation"] is None or -1 <= amount[name]["correlation"] <= 1
    plot = np.asarray(Image.open(out / "blur_amount.png"))
    assert plot.shape[0] > 200 and (plot != 255).any()
    assert "## Amount of blur" in (out / "report.md").read_text()
    planes = report["by_plane"]  # the same per focal plane: the plane decides how much blur the rest may need
    assert list(planes) == [p for p in ("fore", "mid", "back") if any(s["plane"] == p for s in report["samples"])]
    assert sum(entry["samples"] for entry in planes.values()) == len(report["samples"])
    for plane, entry in planes.items():
        rows = [s for s in report["samples"] if s["plane"] == plane]
        assert entry["psnr_defocus"]["mask_blur"] == pytest.approx(
            np.mean([s["mask_blur"]["psnr_defocus"] for s in rows])
        )
        assert entry["blur_amount"]["target"]["mean"] == pytest.approx(np.mean([s["amount"]["target"] for s in rows]))
    overall = sum(e["samples"] * e["psnr_defocus"]["model"] for e in planes.values()) / len(report["samples"])
    assert overall == pytest.approx(report["mean"]["model"]["psnr_defocus"], abs=1e-4)
    assert "## Per focal plane" in (out / "report.md").read_text()
    told = report["mean"]["model_told_amount"]  # told beside guessed, with its own gains
    assert told["oracle_gap"] == pytest.approx(told["psnr_defocus"] - report["mean"]["oracle_blur"]["psnr_defocus"])
    baseline = tmp_path / "baseline"  # a baseline alone has no model radius: no amount, no plot
    assert main(["evaluate", "--baseline", "mask_blur", "--manifest", args[4], "--out", str(baseline)]) == 0
    assert "blur_amount" not in load_report(baseline)


def test_evaluate_amount_asks_the_model_for_it_and_reports_what_it_drew(tiny_checkpoint, tmp_path, capsys):
    """--amount A x --strength S: the "model" run is told A x S for every sample, its output's amount is set against
    it; a bad amount is one error naming --amount and writes nothing."""
    out = tmp_path / "report"
    args = ["evaluate", "--ckpt", str(tiny_checkpoint), "--manifest", str(manifest(tmp_path)), "--out", str(out)]
    assert main([*args, "--amount", "2", "--strength", "1.5"]) == 0
    assert "The model asked 3: " in capsys.readouterr().out
    report = load_report(out)
    assert report["settings"]["amount"] == 2 and report["blur_amount"]["model"]["asked"] == 3
    values = np.array([s["amount"]["model"] for s in report["samples"]])
    assert all(s["amount"]["asked"] == 3 for s in report["samples"])
    assert report["blur_amount"]["model"]["median_ratio"] == pytest.approx(np.median(values / 3))
    assert report["blur_amount"]["model_told_amount"]["asked"] is None  # still told each target's
    for bad, message in (("0", "--amount: must be a number > 0"), ("30", "--amount 30: more than")):
        assert main([*args[:-1], str(tmp_path / bad), "--amount", bad]) == 2
        _assert_one_line_error(capsys, message)
        assert not (tmp_path / bad).exists()


def model_and_samples(checkpoint: Path, folder: Path, frames: int, max_side: int) -> tuple:
    """The checkpoint's Defocuser and the samples `evaluate --manifest` makes of a `manifest` of `frames` frames."""
    from defocus_lit.evaluation import manifest_samples, manifest_settings
    from defocus_lit.models.checkpoint import defocuser_of, read_checkpoint

    model, cfg = defocuser_of(read_checkpoint(checkpoint), checkpoint)
    samples, _, _ = manifest_samples(
        manifest(folder, frames=frames), manifest_settings(cfg, {}), "binary", 256, max_side, torch.device("cpu")
    )
    return model, list(samples)


def test_model_told_amount_tells_the_generator_each_target_amount(tiny_checkpoint, tmp_path):
    """model_told_amount runs the model as predict does with --amount set to the target's (its mean blur radius out
    of focus in percent of the long side), on the sample's plane and on the opposite one (its own target's)."""
    from defocus_lit.baselines import alt_batch
    from defocus_lit.evaluation import GeneratorRuns, model_runs
    from defocus_lit.models.inference import defocus

    model, samples = model_and_samples(tiny_checkpoint, tmp_path, frames=1, max_side=256)
    told = model_runs(GeneratorRuns(model, 256), 1.0, None)["model_told_amount"]
    pair = next(sample.batch for sample in samples if bool(sample.batch["has_alt"]))
    for batch in (pair, alt_batch(pair)):
        amount = float(batch["mean_radius"][0]) * 100 / 72
        expected = defocus(model, batch["image"], batch["mask"], 256, amount=amount)
        assert torch.allclose(told.output(batch), expected, atol=1e-6)
    assert not torch.equal(pair["mean_radius"], alt_batch(pair)["mean_radius"])


def test_the_generator_runs_once_per_mask_and_amount_and_gives_what_predict_gives(tiny_checkpoint, tmp_path):
    """The model (guessing), the model told the target's amount and their amounts read one generator run per mask
    (the sample's and its opposite plane's) and amount; the model's output is `defocus`'s, as predict runs it."""
    from defocus_lit.evaluation import GeneratorRuns, build_methods, evaluate, model_runs
    from defocus_lit.models.inference import defocus

    model, samples = model_and_samples(tiny_checkpoint, tmp_path, frames=2, max_side=24)
    runs = model_runs(GeneratorRuns(model, 24), 1.0, None)
    calls = []
    model.generator.register_forward_hook(lambda *_: calls.append(1))
    report = evaluate(build_methods(runs, {}), iter(samples), tmp_path, torch.device("cpu"), amounts=runs)
    masks = sum(1 + bool(sample.batch["has_alt"]) for sample in samples)
    assert len(report["samples"]) == len(samples) and len(calls) == 2 * masks
    batch = samples[0].batch
    got = build_methods(model_runs(GeneratorRuns(model, 24), 1.0, None), {})["model"](batch)
    assert torch.equal(got, defocus(model, batch["image"], batch["mask"], 24))


def test_how_amounts_follow_their_reference():
    from defocus_lit.evaluation import follows
    from defocus_lit.models.inference import amount_percent

    radius = torch.zeros(1, 1, 4, 8)
    radius[..., 2:] = 6.0
    mask = torch.ones(1, 1, 4, 8)
    mask[..., :1] = 0  # one column sharp: the mean is over the other seven, 6 px x 6/7, of an 8-px long side
    assert amount_percent(radius, mask).item() == pytest.approx(6 * 6 / 7 / 8 * 100)
    one = follows(np.array([4.0]), np.array([5.0]))
    assert one == {"mean": 4.0, "correlation": None, "median_ratio": 0.8, "median_error": pytest.approx(0.2)}
    three = follows(np.array([1.0, 2.0, 3.3]), np.array([2.0, 4.0, 6.0]))
    assert three["correlation"] == pytest.approx(0.998, abs=1e-3) and three["median_ratio"] == 0.5


def test_baseline_alone_with_limit_replaces_an_earlier_report(dataset, tmp_path):
    out = tmp_path / "report"
    for baseline in ("identity", "mask_blur", "oracle_blur"):
        assert (
            main(["evaluate", "--baseline", baseline, "--data", str(dataset), "--out", str(out), "--limit", "1"]) == 0
        )
        report = load_report(out)
        assert set(report["mean"]) == {baseline} and len(report["samples"]) == 1


def test_global_blur_needs_the_checkpoint_that_fitted_it(tiny_checkpoint, dataset, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--baseline", "global_blur", "--data", str(dataset), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "--baseline global_blur")
    args = ["evaluate", "--ckpt", str(tiny_checkpoint), "--baseline", "global_blur", "--data", str(dataset)]
    assert main([*args, "--out", str(out), "--limit", "2"]) == 0
    assert set(load_report(out)["mean"]) == {"model", "model_told_amount", "global_blur"}


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
                "--frame-side",
                "40",
            ]
        )
        == 0
    )
    report = load_report(out)
    assert set(report["mean"]) == METHODS
    assert report["settings"]["max_side"] == 256 and report["settings"]["frame_side"] == 40
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


def test_the_model_runs_as_predict_runs_it(tiny_checkpoint, tmp_path):
    """Frames larger than the working side: the generator runs at --max-side and the blur is scaled, as in predict;
    the targets are rendered with k and max_radius scaled alike."""
    from defocus_lit.models.inference import radius_scale

    assert radius_scale(72, 256) == 1.0 and radius_scale(72, 24) == 3.0 and radius_scale(72, 0) == 1.0
    outs = {}
    for max_side in ("24", "0"):
        out = tmp_path / f"report{max_side}"
        args = ["evaluate", "--ckpt", str(tiny_checkpoint), "--manifest", str(manifest(tmp_path, frames=1))]
        assert main([*args, "--out", str(out), "--max-side", max_side, "--baseline", "mask_blur"]) == 0
        outs[max_side] = load_report(out)
    small, full = outs["24"]["samples"][0], outs["0"]["samples"][0]
    assert small["model"]["psnr"] != full["model"]["psnr"]  # a different working size: a different output
    assert small["mask_blur"]["psnr_defocus"] != full["mask_blur"]["psnr_defocus"]  # targets with 3x the blur


def test_manifest_strength_renders_targets_with_k_times_strength(tiny_checkpoint, tmp_path):
    """--strength 0.5 = the targets of k/2 (the baselines told the answer score the same as with --k k/2) and the
    model run with half its radii; global_blur's radii are halved alike."""
    from defocus_lit.models.checkpoint import load_checkpoint

    k = load_checkpoint(tiny_checkpoint)[1].render.k
    args = ["evaluate", "--ckpt", str(tiny_checkpoint), "--manifest", str(manifest(tmp_path, frames=1)), "--limit", "2"]
    reports = {}
    for name, flags in {"strength": ["--strength", "0.5"], "k": ["--k", str(k / 2)], "default": []}.items():
        assert main([*args, "--out", str(tmp_path / name), *flags]) == 0
        reports[name] = load_report(tmp_path / name)
    halved, at_k, default = reports["strength"], reports["k"], reports["default"]
    assert halved["settings"]["strength"] == 0.5 and at_k["settings"]["strength"] == 1
    assert halved["settings"]["renderer"]["k"] == at_k["settings"]["renderer"]["k"] == k / 2
    assert halved["settings"]["renderer"]["max_radius"] == default["settings"]["renderer"]["max_radius"]
    assert [(s["name"], s["plane"]) for s in halved["samples"]] == [(s["name"], s["plane"]) for s in at_k["samples"]]
    for a, b in zip(halved["samples"], at_k["samples"]):
        assert a["identity"] == b["identity"] and a["mask_blur"] == b["mask_blur"]  # the same targets
        assert a["model"]["psnr"] != b["model"]["psnr"]  # the model: half its blur
        told = ("psnr", "psnr_defocus", "ssim")  # told the same targets' amounts (global_blur, in the gains, differs)
        assert [a["model_told_amount"][k] for k in told] == [b["model_told_amount"][k] for k in told]
    assert halved["mean"]["identity"]["psnr"] > default["mean"]["identity"]["psnr"]  # less blur than at k
    fitted = default["settings"]["global_blur"]
    assert halved["settings"]["global_blur"] == {level: r / 2 for level, r in fitted.items()}


@pytest.mark.parametrize("strength, named", [("2", "--strength 2: applies to --manifest only"), ("0", "--strength")])
def test_strength_with_a_dataset_or_not_positive(tiny_checkpoint, dataset, tmp_path, capsys, strength, named):
    out = tmp_path / "report"
    args = ["evaluate", "--ckpt", str(tiny_checkpoint), "--data", str(dataset), "--out", str(out)]
    assert main([*args, "--strength", strength]) == 2
    _assert_one_line_error(capsys, named)
    assert not out.exists()


def test_manifest_leaves_out_the_photos_the_checkpoint_trained_on(tiny, tmp_path, capsys):
    """A checkpoint trained on synthetic scenes plus two photos is scored on a manifest holding one of them (copied
    under another name) and a new photo: only the new one is scored, the other is named as left out; a manifest of
    trained photos alone is an error; with the training file gone every frame is scored, with a warning."""
    from defocus_lit.config import load_experiment
    from defocus_lit.training import run_training

    photos = tmp_path / "photos"
    photos.mkdir()
    manifest(photos, frames=2)
    (tmp_path / "mix.yaml").write_text(
        "sources:\n  - {source: synthetic, num: 8}\n  - {source: manifest, path: photos/manifest.csv}\n"
    )
    mixed = tmp_path / "mixed.h5"
    build = ["data", "build", "--source", "mix", "--path", str(tmp_path / "mix.yaml"), "--out", str(mixed)]
    assert main([*build, "--size", "64x64", "--layers", "4", "--quiet", "--workers", "0"]) == 0
    ckpt = str(run_training(load_experiment("pix2pix_4ch", [*tiny, f"data.path={mixed}"], cpu_preset=True)).best_ckpt)

    held = tmp_path / "held"
    held.mkdir()
    for name, source in (("copy", "scene1"), ("new", "scene0")):
        (held / f"{name}_depth.png").write_bytes((photos / f"{source}_depth.png").read_bytes())
    (held / "copy_rgb.png").write_bytes((photos / "scene1_rgb.png").read_bytes())
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (48, 72, 3), dtype=np.uint8)).save(held / "new_rgb.png")
    rows = "image,depth\ncopy_rgb.png,copy_depth.png\nnew_rgb.png,new_depth.png\n"
    (held / "manifest.csv").write_text(rows)
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["evaluate", "--ckpt", ckpt, "--manifest", str(held / "manifest.csv"), "--out", str(out)]) == 0
    assert f"left out 1 frame(s) the checkpoint trained on ({mixed}): copy_rgb.png" in capsys.readouterr().out
    report = load_report(out)
    assert {s["name"] for s in report["samples"]} == {"new"}
    assert report["settings"]["trained_on"] == ["copy_rgb.png"]

    (held / "trained.csv").write_text("image,depth\ncopy_rgb.png,copy_depth.png\n")
    only_trained = tmp_path / "only_trained"
    assert main(["evaluate", "--ckpt", ckpt, "--manifest", str(held / "trained.csv"), "--out", str(only_trained)]) == 2
    _assert_one_line_error(capsys, "trained.csv")
    assert not only_trained.exists()

    mixed.rename(tmp_path / "moved.h5")
    assert main(["evaluate", "--ckpt", ckpt, "--manifest", str(held / "manifest.csv"), "--out", str(out)]) == 0
    warning = capsys.readouterr().err
    assert "warning: " in warning and str(mixed) in warning
    assert {s["name"] for s in load_report(out)["samples"]} == {"copy", "new"}
