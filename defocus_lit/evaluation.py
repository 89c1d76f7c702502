"""Evaluation: score a checkpoint and the baselines on held-out data and make a report (`evaluate_checkpoint`, which
`defocus-lit evaluate` and the Python API call).

The model runs exactly as `defocus-lit predict` runs it (`models.inference.defocus`: generator at the training
frames' long side or `--max-side` px, whichever is smaller, blur-stack head and keep-focus at the frame's
resolution, radii scaled above `--max-side`).

Data, one of:
- `--data D.h5`: the file's test split (its val split when it has no test samples) at full frame.
- `--manifest M.csv` (`image,depth[,kind,scale]`, as `data build`): frames resized to a long side of at most
  `--frame-side` px (default 256, the scale of the renderer's k), targets rendered on the fly for the three focal
  planes with the masks, sample filter and per-frame pipeline of `data build` (`data.samples`), with the renderer
  settings the checkpoint was trained with (`cfg.render`; without a checkpoint `RenderSettings()`; `--k/
  --max-radius/--blur-model` override either). A frame larger than `--max-side` is rendered with k and max_radius
  scaled by the factor by which predict scales the blur, so target and model mean the same amount of blur.
  Photos that the checkpoint's training dataset holds (`data.path` built from a manifest or a mix with one, in any
  split; found by their bytes, under any name) are left out and named: the figures are on frames it never saw.

`--amount A` and `--strength S` (as in predict): the "model" run is told A times S (percent of the long side), or
guesses and has its guess times S (its blur radii times S, clamped at the top of its blur stack). The manifest's
targets are rendered with k times S (max_radius unchanged): the same wider aperture; global_blur's radii are scaled
and clamped alike (fitted at strength 1); mask_blur and oracle_blur are told the targets' blur. `--data` needs
strength 1: the file's targets are rendered at one k.

Methods: the checkpoint's model (`--ckpt`) as predict runs it; for a model trained with the amount input also
`model_told_amount`, the model told each target's amount (the number `mask_blur` is told) through its input: the
two side by side are what knowing the amount is worth; and the baselines (`defocus_lit.baselines`): identity,
mask_blur, global_blur (its radii fitted on the checkpoint's training split, so it needs `--ckpt`) and oracle_blur;
`--baseline NAME` keeps only that baseline (alone when there is no `--ckpt`). Metrics (defocus_lit.metrics) count
only pixels with a depth measurement; plane sensitivity compares a frame's fore and back samples over the pixels out
of focus in both (nan/null for a sample with no opposite plane); each model run's depth_gain and oracle_gap are its
psnr_defocus minus global_blur's and oracle_blur's, per sample and for the means.

Output, written to a temporary folder renamed to `--out` at the end (a failure leaves no partial folder):
`report.json` {"mean": {method: {metric: value}}, "by_plane": {plane: {"samples", "psnr_defocus": {method:
value}[, "blur_amount"]}}, "samples": [{"name", "plane", method: {metric: value}}], "settings": {...}}, `report.md`
(the same tables in Markdown) and one PNG per sample
(input | mask | output | target | abs error x4; the output is the model's, else the baseline's). A model with a
blur head also gets the amount of blur (the head's expected radius over the pixels out of focus, in percent of the
long side): per sample the target's, the amount asked (`--amount` times `--strength`, else null) and each model
run's (`"amount"`); over the samples, for each model run, how its amount follows the one it should have (the one
asked, else the target's): mean, correlation, median ratio and median relative error (`"blur_amount"`); and
`blur_amount.png`, output against target per sample.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from defocus_lit.baselines import NAMES as BASELINE_NAMES
from defocus_lit.baselines import GlobalBlur, alt_batch, baselines
from defocus_lit.config import to_container
from defocus_lit.data.datamodule import DefocusDataModule
from defocus_lit.data.hdf5 import read_info
from defocus_lit.data.planes import PAPER_PLANES, PLANES, SampleFilter, patch_mask, valid_depth
from defocus_lit.data.samples import clean_depth, frame_samples, shrink
from defocus_lit.data.sources import open_source, recorded_photos
from defocus_lit.errors import UserError, warn
from defocus_lit.io import atomic_path, file_digest, write_rgb
from defocus_lit.metrics import IMAGE_METRICS, MetricSet, PlaneSensitivity, per_sample_metrics
from defocus_lit.models.callbacks import gains
from defocus_lit.models.checkpoint import Defocuser, defocuser_of, extras_of, read_checkpoint
from defocus_lit.models.inference import (
    MAX_SIDE,
    amount_percent,
    check_amount,
    check_max_side,
    check_strength,
    generator_output,
    radius_scale,
    select_device,
    told_radius,
)
from defocus_lit.render import RenderSettings
from defocus_lit.visualize import panel_row, scatter_plot

GAINS = ("depth_gain", "oracle_gap")
METRICS = (*IMAGE_METRICS, "plane_sensitivity", *GAINS)
FRAME_SIDE = 256  # px: manifest frames are resized to this long side (the scale of the renderer's k)
ERROR_GAIN = 4.0  # the abs-error panel is amplified so small errors show
AMOUNT_PLOT = "blur_amount.png"
MODEL_RUNS = ("model", "model_told_amount")
OPPOSITE = {"fore": "back", "back": "fore"}
Method = Callable[[dict[str, Tensor]], Tensor]


def evaluate_checkpoint(
    ckpt: str | Path | None = None,
    *,
    data: str | Path | None = None,
    manifest: str | Path | None = None,
    out: str | Path | None = None,
    baseline: str | None = None,
    limit: int | None = None,
    device: str = "auto",
    max_side: int = MAX_SIDE,
    amount: float | None = None,
    strength: float = 1.0,
    frame_side: int = FRAME_SIDE,
    blur_model: str | None = None,
    k: float | None = None,
    max_radius: float | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Score a checkpoint (and the baselines, or one `baseline` alone without `ckpt`) on the test split of a built
    dataset (`data`) or on a manifest's photos (`manifest`) and return the report (see the module's docstring).
    With `out` the report and one panel per sample are written to that folder (atomically: a failure leaves no
    partial folder); without, nothing is written. Options as `defocus-lit evaluate`'s, whose names the errors
    (UserError) use; `say` gets the lines about left-out photos."""
    if (data is None) == (manifest is None):
        raise UserError("--data / --manifest: give exactly one")
    if out is not None:
        check_out_dir(Path(out))
    if limit is not None and limit < 1:
        raise UserError(f"--limit: must be at least 1, got {limit}")
    if frame_side < 16:
        raise UserError(f"--frame-side: must be at least 16 px, got {frame_side}")
    check_max_side(max_side)
    renderer = {"blur_model": blur_model, "k": k, "max_radius": max_radius}
    overrides = {key: value for key, value in renderer.items() if value is not None}
    if data and overrides:
        flags = ", ".join("--" + key.replace("_", "-") for key in overrides)
        raise UserError(
            f"{flags}: renderer settings apply to --manifest only (the targets in {data} are already rendered)"
        )
    if ckpt is None and baseline is None:
        raise UserError("--ckpt: give a checkpoint, or --baseline NAME to score a baseline alone")
    if baseline is not None and baseline not in BASELINE_NAMES:
        raise UserError(f"--baseline: {baseline!r} is not one of {', '.join(BASELINE_NAMES)}")
    torch_device = select_device(device)
    model = cfg = global_blur = None
    if ckpt:
        checkpoint = read_checkpoint(ckpt)
        model, cfg = defocuser_of(checkpoint, ckpt)
        model.to(torch_device)
        fitted = extras_of(checkpoint).get("global_blur")
        global_blur = GlobalBlur({float(k): v for k, v in fitted.items()}) if fitted else None
    check_strength(model, strength)
    check_amount(model, amount)
    if amount is not None and model is None:
        raise UserError("--amount: tells a checkpoint's model how much to blur; give --ckpt")
    if data and strength != 1:
        raise UserError(
            f"--strength {strength:g}: applies to --manifest only (the targets in {data} are already rendered at one k)"
        )
    if baseline == "global_blur" and global_blur is None:
        raise UserError(
            "--baseline global_blur: needs --ckpt of a run that fitted it on its training split "
            "(checkpoints from before global_blur have none)"
        )
    mask_kind = cfg.data.mask_kind if cfg is not None else "binary"

    if data:
        samples, total, details = dataset_samples(Path(data), mask_kind, torch_device, cfg)
        largest = float(details["renderer"]["max_radius"])
    else:
        settings = manifest_settings(cfg, overrides, strength)
        samples, total, details = manifest_samples(
            Path(manifest), settings, mask_kind, frame_side, max_side, torch_device, trained_photos(cfg)
        )
        if details["trained_on"]:
            say(
                f"left out {len(details['trained_on'])} frame(s) the checkpoint trained on ({cfg.data.path}): "
                + ", ".join(details["trained_on"])
            )
        largest = settings["max_radius"] * radius_scale(frame_side, max_side)
        global_blur = global_blur.scaled(strength, settings["max_radius"]) if global_blur else None
    names = BASELINE_NAMES if baseline is None else (baseline,)
    runs = model_runs(GeneratorRuns(model, max_side), strength, amount) if model is not None else {}
    methods = build_methods(runs, baselines(global_blur, largest, names))
    info = {
        "checkpoint": None if ckpt is None else str(ckpt),
        "arch": cfg.arch if cfg is not None else None,
        "data": None if data is None else str(data),
        "manifest": None if manifest is None else str(manifest),
        "mask_kind": mask_kind,
        "device": torch_device.type,
        "max_side": max_side,
        "strength": strength,
        "amount": amount,
        "global_blur": global_blur.radii if global_blur else None,
        **details,
    }

    with atomic_path(Path(out), folder=True) if out is not None else tempfile.TemporaryDirectory() as staging:
        report = evaluate(
            methods,
            samples,
            Path(staging),
            torch_device,
            limit=limit,
            total=total,
            source=str(data or manifest),
            amounts=runs if model is not None and model.head is not None else None,
            asked=None if amount is None else amount * strength,
        )
        report["settings"] = info
        if out is not None:
            write_report(report, Path(staging))
    return report


# ----- methods ------------------------------------------------------------------------------------------------
class GeneratorRuns:
    """The generator's output for a batch's image and mask as predict runs it, told an amount in the head's px or
    none (`generator_output`: the output and the head's radius scale), kept for the last four runs. Every model
    method of a sample (the model, the model told the target's amount, their blur radii) reads one run per mask and
    amount, where each reading its own would take twice as many."""

    def __init__(self, model: Defocuser, max_side: int) -> None:
        self.model, self.max_side = model, max_side
        self._recent: list[tuple[Tensor, Tensor, float | None, tuple[Tensor, float]]] = []  # holds the tensors

    @torch.inference_mode()
    def __call__(self, batch: dict[str, Tensor], told: float | None = None) -> tuple[Tensor, float]:
        image, mask = batch["image"], batch["mask"]
        for seen_image, seen_mask, seen_told, output in self._recent:
            if seen_image is image and seen_mask is mask and seen_told == told:
                return output
        output = generator_output(self.model, image, mask, self.max_side, told)
        self._recent = [*self._recent[-3:], (image, mask, told, output)]
        return output


@dataclass
class ModelRun:
    """One way of running the model on a batch (B=1): the amount it is told, in the head's px (None: it guesses),
    and the multiplier of its head's radii."""

    runs: GeneratorRuns
    told: Callable[[dict[str, Tensor]], float | None]
    head_strength: float

    def output(self, batch: dict[str, Tensor]) -> Tensor:
        told = self.told(batch)
        raw, scale = self.runs(batch, told)
        model = self.runs.model
        return model.finish(batch["image"], batch["mask"], raw, scale, self.head_strength, told)

    def amount(self, batch: dict[str, Tensor]) -> float:
        """The amount its output has: the head's expected radius out of focus, in percent of the long side."""
        told = self.told(batch)
        raw, scale = self.runs(batch, told)
        radius = self.runs.model.radius(raw, batch["mask"], scale, self.head_strength, told)
        return float(amount_percent(radius, batch["mask"])[0])


def model_runs(runs: GeneratorRuns, strength: float, amount: float | None) -> dict[str, ModelRun]:
    """ "model": as predict runs it (`--amount` times `--strength` told, or its own guess times `--strength`);
    "model_told_amount", for a model with the amount input: told each target's amount, the number `mask_blur` is
    told (targets rendered at `--strength` S have it already)."""
    model, max_side = runs.model, runs.max_side

    def asked(batch: dict[str, Tensor]) -> float | None:
        return None if amount is None else told_radius(model, amount, strength, long_side(batch), max_side)

    def target(batch: dict[str, Tensor]) -> float:
        return float(batch["mean_radius"][0]) / radius_scale(long_side(batch), max_side)

    methods = {"model": ModelRun(runs, asked, strength if amount is None else 1.0)}
    if model.amount_input and model.head is not None:
        methods["model_told_amount"] = ModelRun(runs, target, 1.0)
    return methods


def long_side(batch: dict[str, Tensor]) -> int:
    return max(batch["image"].shape[-2:])


def build_methods(model_methods: dict[str, ModelRun], baseline_methods: dict[str, Method]) -> dict[str, Method]:
    """name -> fn(batch) -> output (B,3,H,W) in [-1,1] for batch["mask"]: the model's runs, then the baselines."""
    return {name: run.output for name, run in model_methods.items()} | baseline_methods


# ----- samples ------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    name: str
    plane: str
    batch: dict[str, Tensor]  # one sample (B=1) in the DataModule's batch layout, on the device
    size: tuple[int, int]  # (H,W) of the frame without padding


def dataset_samples(
    path: Path, mask_kind: str, device: torch.device, cfg: DictConfig | None
) -> tuple[Iterator[Sample], int, dict]:
    """The test split (val when there is no test sample) of a built dataset at full frame, batch size 1;
    with the number of samples and {"split", "renderer"} (the settings recorded in the file)."""
    info = read_info(path)
    split = "test" if info["splits"]["test"]["samples"] else "val"
    if not info["splits"][split]["samples"]:
        raise UserError(f"{path}: no test or val samples to evaluate")
    if cfg is not None and info["renderer"] and dict(info["renderer"]) != to_container(cfg.render):
        print(
            f"note: {path} was rendered with {info['renderer']}, the checkpoint was trained on "
            f"{to_container(cfg.render)}"
        )
    datamodule = DefocusDataModule(
        str(path),
        batch_size=1,
        num_workers=0,
        crop_size=None,
        mask_kind=mask_kind,
        pad_multiple=1,  # the frame as it is: `defocus` pads for the network, as in predict
        photometric=False,
    )
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    size = tuple(info["size"])

    def samples() -> Iterator[Sample]:
        for batch in loader:
            # a frame's samples with its depth read as disparity too (`RGBDFrame.also_disparity`) are told apart
            name = f"{split}_frame{int(batch['frame'][0]):05d}" + ("_disparity" if int(batch["kind"][0]) else "")
            yield Sample(name, PLANES[int(batch["plane"][0])], {k: v.to(device) for k, v in batch.items()}, size)

    return samples(), len(loader), {"split": split, "renderer": info["renderer"]}


def manifest_settings(cfg: DictConfig | None, overrides: dict, strength: float = 1.0) -> dict:
    """The checkpoint's renderer settings (defaults without one), with the command-line overrides and the thin-lens
    k times `strength` (a wider aperture; max_radius unchanged). The blur_map renderer has no k: it takes strength 1
    only."""
    settings = RenderSettings(**{**(to_container(cfg.render) if cfg is not None else {}), **overrides})
    if strength != 1 and settings.blur_model != "thin_lens":
        raise UserError(
            f"--strength {strength:g}: scales the thin-lens k; the {settings.blur_model} renderer has none "
            "(use --blur-model thin_lens)"
        )
    settings.k *= strength
    return settings.to_dict()


def _to_tensor(array: np.ndarray, device: torch.device) -> Tensor:
    """(H,W,3) or (H,W) uint8 -> (1,C,H,W) float 0..255 on the device."""
    t = torch.from_numpy(np.ascontiguousarray(array)).to(device).float()
    return t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]


def trained_photos(cfg: DictConfig | None) -> set[str]:
    """Digests (`file_digest`) of the photos in the checkpoint's training dataset, `data.path`, in any split (its val
    split chose the checkpoint): empty for the embedded synthetic scenes, and with a warning when the file or a
    manifest it was built from can no longer be read."""
    if cfg is None or not cfg.data.path:
        return set()
    try:
        photos = recorded_photos(read_info(cfg.data.path)["source"])
    except UserError as err:
        warn(f"the photos the checkpoint trained on cannot be told apart, so every frame is scored ({err})")
        return set()
    return {file_digest(photo) for photo in photos}


def manifest_samples(
    path: Path,
    settings: dict,
    mask_kind: str,
    frame_side: int,
    max_side: int,
    device: torch.device,
    trained: Collection[str] = (),
) -> tuple[Iterator[Sample], int, dict]:
    """Samples rendered from a manifest's frames (long side at most `frame_side`) but those whose photo is one of
    `trained` (digests): every focal plane the sample filter keeps (as `data build`), each paired with its frame's
    opposite plane for plane sensitivity. A frame larger than `max_side` is rendered with k and max_radius scaled as
    predict scales the blur (batch["radius_scale"]). Also an upper bound of their number and {"renderer",
    "frame_side", "filtered", "trained_on"}, where "filtered" counts the planes left out by reason as they are met
    and "trained_on" names the photos left out. UserError when every photo is a trained one."""
    source = open_source("manifest", str(path))
    seen = [bool(trained) and file_digest(row.image) in trained for row in source.rows]
    if all(seen):
        raise UserError(f"{path}: every photo is in the checkpoint's training data; no frame is held out to score")
    held_out = [index for index, was_seen in enumerate(seen) if not was_seen]
    trained_on = [row.image.name for row, was_seen in zip(source.rows, seen) if was_seen]
    sample_filter = SampleFilter()
    filtered: Counter = Counter()

    def samples_of_frame(index: int) -> list[Sample]:
        frame = source[index]
        image, depth = shrink(frame.image, frame.depth, frame_side)
        depth = clean_depth(depth)
        scale = radius_scale(max(depth.shape), max_side)
        scaled = RenderSettings(
            **{**settings, "k": settings["k"] * scale, "max_radius": settings["max_radius"] * scale}
        )
        kept, rejected = frame_samples(
            np.ascontiguousarray(image), depth, frame.kind, PAPER_PLANES, scaled, sample_filter, str(device)
        )
        filtered.update(rejected)
        if kept is None:
            return []
        planes = {}
        for i, code in enumerate(kept.plane):
            mask = patch_mask(kept.plane_map[i]) if mask_kind == "patch" else kept.mask[i]
            planes[PLANES[code]] = {
                "target": _to_tensor(kept.target[i], device) / 127.5 - 1,
                "mask": (_to_tensor(mask, device) / 255 * 2).round() / 2,
                "focus": _to_tensor(kept.mask[i] == 0, device),
                "mean_radius": torch.tensor([float(kept.mean_radius[i])], device=device),
            }
        common = {
            "image": _to_tensor(image, device) / 127.5 - 1,
            "valid": _to_tensor(valid_depth(depth), device),
            "frame": torch.tensor([index], device=device),
            "radius_scale": torch.tensor([scale], device=device),
        }
        samples = []
        for plane, maps_of_plane in planes.items():
            alt = planes.get(OPPOSITE.get(plane, ""))
            batch = {
                **common,
                **maps_of_plane,
                "plane": torch.tensor([PLANES.index(plane)], device=device),
                "alt_mask": (alt or maps_of_plane)["mask"],
                "alt_target": (alt or maps_of_plane)["target"],
                "alt_mean_radius": (alt or maps_of_plane)["mean_radius"],
                "has_alt": torch.tensor([alt is not None], device=device),
            }
            samples.append(Sample(frame.name, plane, batch, depth.shape))
        return samples

    def samples() -> Iterator[Sample]:
        for index in held_out:
            yield from samples_of_frame(index)

    details = {
        "split": None,
        "renderer": settings,
        "frame_side": frame_side,
        "filtered": filtered,
        "trained_on": trained_on,
    }
    return samples(), len(held_out) * len(PAPER_PLANES), details


# ----- scoring ------------------------------------------------------------------------------------------------
def _float(value: Tensor | float) -> float | None:
    """A JSON-able metric value: None for nan (undefined)."""
    value = float(value)
    return None if math.isnan(value) else value


def plane_sensitivity(out: Tensor, alt_out: Tensor, batch: dict[str, Tensor]) -> float:
    """One sample's plane sensitivity (see metrics.PlaneSensitivity)."""
    metric = PlaneSensitivity().to(out.device)
    metric.update(out, alt_out, batch)
    return float(metric.compute())


def score(method: Method, batch: dict[str, Tensor], metric_set: MetricSet) -> tuple[Tensor, dict[str, float]]:
    """The method's output for the sample and its metrics; also adds them to the running means."""
    out = method(batch)
    values = per_sample_metrics(out, batch)[0]
    metric_set.update(out, batch)
    values["plane_sensitivity"] = math.nan
    if bool(batch["has_alt"].any()):
        alt_out = method(alt_batch(batch))
        metric_set.update_plane(out, alt_out, batch)
        values["plane_sensitivity"] = plane_sensitivity(out, alt_out, batch)
    return out, values


def sample_panel(sample: Sample, output: Tensor) -> np.ndarray:
    """input | mask | output | target | abs error x4, cropped to the frame (without padding)."""
    h, w = sample.size
    b = {k: sample.batch[k][0, :, :h, :w] for k in ("image", "mask", "target")}
    out = output[0, :, :h, :w]
    error = ((out - b["target"]).abs() / 2 * ERROR_GAIN).clamp(0, 1).mean(0, keepdim=True) * 2 - 1
    return panel_row(
        {
            "input": b["image"],
            "mask": b["mask"] * 2 - 1,
            "output": out,
            "target": b["target"],
            f"abs error x{ERROR_GAIN:g}": error,
        }
    )


@torch.inference_mode()
def evaluate(
    methods: dict[str, Method],
    samples: Iterator[Sample],
    out_dir: Path,
    device: torch.device,
    *,
    limit: int | None = None,
    total: int | None = None,
    source: str = "",
    amounts: dict[str, ModelRun] | None = None,
    asked: float | None = None,
) -> dict:
    """Score every sample with every method, write one panel PNG per sample into `out_dir`; the report dict.
    `source` names the data in the error raised when there is no sample. With `amounts` (the model's runs, for a
    blur head), also the amount of blur per sample and overall, and `blur_amount.png` (see the module's docstring);
    `asked`: the amount (percent of the long side) the "model" run is told, None where it guesses."""
    metric_sets = {name: MetricSet().to(device) for name in methods}
    rows = []
    bar = tqdm(samples, total=min(total, limit) if total and limit else total or limit, desc="evaluate", unit="sample")
    for index, sample in enumerate(bar):
        if limit is not None and index >= limit:
            break
        row: dict = {"name": sample.name, "plane": sample.plane}
        outputs = {}
        for name, method in methods.items():
            outputs[name], values = score(method, sample.batch, metric_sets[name])
            row[name] = {key: _float(values.get(key, math.nan)) for key in METRICS}
        _add_gains(row)
        if amounts:
            row["amount"] = sample_amounts(sample.batch, amounts, asked)
        row["image"] = f"{index:04d}_{sample.name}_{sample.plane}.png"
        write_rgb(out_dir / row["image"], sample_panel(sample, next(iter(outputs.values()))))
        rows.append(row)
    bar.close()
    if not rows:
        raise UserError(f"{source}: no sample to evaluate (every focal plane of every frame was filtered out)")
    mean = {name: {key: _float(value) for key, value in metric_sets[name].compute().items()} for name in methods}
    for values in mean.values():
        values.update({key: None for key in GAINS})
    _add_gains(mean)
    report = {"mean": mean, "by_plane": by_plane(rows, list(methods)), "samples": rows}
    if amounts:
        report["blur_amount"] = blur_amount(rows)
        write_rgb(out_dir / AMOUNT_PLOT, amount_plot(rows, report["blur_amount"]))
    return report


def sample_amounts(batch: dict[str, Tensor], runs: dict[str, ModelRun], asked: float | None) -> dict:
    """One sample's amounts of blur in percent of its long side: the target's ("target", the number mask_blur is
    told), the amount `asked` of the "model" run (None where it guesses) and each run's output's (the head's
    expected radius over the pixels out of focus)."""
    target = float(batch["mean_radius"][0]) * 100 / long_side(batch)
    return {"target": target, "asked": asked} | {name: run.amount(batch) for name, run in runs.items()}


def follows(amounts: np.ndarray, reference: np.ndarray) -> dict[str, float | None]:
    """How closely per-sample `amounts` follow `reference` (both (N,), > 0): their mean, the correlation (None for
    fewer than two samples or no spread), the median ratio and the median relative error |amount / reference - 1|."""
    spread = len(amounts) > 1 and amounts.std() > 0 and reference.std() > 0
    ratio = amounts / np.maximum(reference, 1e-6)
    return {
        "mean": float(amounts.mean()),
        "correlation": float(np.corrcoef(amounts, reference)[0, 1]) if spread else None,
        "median_ratio": float(np.median(ratio)),
        "median_error": float(np.median(np.abs(ratio - 1))),
    }


def blur_amount(rows: list[dict]) -> dict[str, dict]:
    """Over the samples (percent of the long side): the targets' mean amount and, per model run, how its output's
    amount follows the amount it should have: the one asked where it was told one (`--amount`), else the
    target's (told it, or guessing it)."""
    target = np.array([row["amount"]["target"] for row in rows])
    out: dict[str, dict] = {"target": {"mean": float(target.mean())}}
    for name in (key for key in rows[0]["amount"] if key not in ("target", "asked")):
        asked = rows[0]["amount"]["asked"] if name == "model" else None
        reference = target if asked is None else np.full_like(target, asked)
        out[name] = {"asked": asked} | follows(np.array([row["amount"][name] for row in rows]), reference)
    return out


def by_plane(rows: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per focal plane (those present, in PLANES order): its number of samples, each method's psnr_defocus (the
    mean of the samples' values, as the overall means are) and, where the rows have it, its blur amount. Where a
    model gains or loses often depends on the plane: focused near, the rest of a photo may need any amount of blur."""
    planes = {}
    for plane in PLANES:
        group = [row for row in rows if row["plane"] == plane]
        if not group:
            continue
        values = {name: [row[name]["psnr_defocus"] for row in group] for name in methods}
        planes[plane] = {
            "samples": len(group),
            "psnr_defocus": {name: _mean(v) for name, v in values.items()},
            **({"blur_amount": blur_amount(group)} if "amount" in group[0] else {}),
        }
    return planes


def _mean(values: list[float | None]) -> float | None:
    """The mean of the defined values (None where none is)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _correlation(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def amount_plot(rows: list[dict], amount: dict) -> np.ndarray:
    """The amount of blur of each model run's output per sample against the target's (percent of the long side):
    the model's per focal plane, told the target's amount in one colour of its own."""
    points = {
        f"model, {plane}": [(row["amount"]["target"], row["amount"]["model"]) for row in rows if row["plane"] == plane]
        for plane in PLANES
    }
    if "model_told_amount" in amount:
        points["told the target's"] = [(row["amount"]["target"], row["amount"]["model_told_amount"]) for row in rows]
    points = {name: group for name, group in points.items() if group}
    model = amount["model"]
    told = "" if model["asked"] is None else f"told {model['asked']:g}, "
    title = f"amount of blur per sample (model: {told}correlation {_correlation(model['correlation'])})"
    return scatter_plot(points, "target (% of the long side)", "output (% of the long side)", title)


def _add_gains(methods: dict) -> None:
    """Each model run's depth_gain and oracle_gap from its and the baselines' psnr_defocus (None where not
    defined)."""
    values = {
        f"baseline/{name}/psnr_defocus": v["psnr_defocus"]
        for name, v in methods.items()
        if isinstance(v, dict) and v.get("psnr_defocus") is not None
    }
    for name in MODEL_RUNS:
        if name in methods and methods[name]["psnr_defocus"] is not None:
            methods[name].update(gains(values | {"psnr_defocus": methods[name]["psnr_defocus"]}, prefix=""))


# ----- report -------------------------------------------------------------------------------------------------
def _cell(value: float | None, key: str) -> str:
    if value is None:
        return "n/a"
    if key in GAINS:
        return f"{value:+.2f}"
    return f"{value:.4f}" if key in ("ssim", "plane_sensitivity") else f"{value:.2f}"


def mean_table(mean: dict[str, dict]) -> str:
    lines = ["| method | " + " | ".join(METRICS) + " |", "| --- |" + " ---: |" * len(METRICS)]
    lines += [f"| {name} | " + " | ".join(_cell(v[k], k) for k in METRICS) + " |" for name, v in mean.items()]
    return "\n".join(lines)


def plane_table(planes: dict[str, dict]) -> str:
    """psnr_defocus per focal plane and method, with the amount of blur where known: the correlation of the model's
    with the targets' and the means (percent of the long side)."""
    methods = list(next(iter(planes.values()))["psnr_defocus"]) if planes else []
    amount = any("blur_amount" in entry for entry in planes.values())
    extra = ["amount correlation", "amount model / target (%)"] if amount else []
    lines = [
        "| plane | samples | " + " | ".join(methods + extra) + " |",
        "| --- | ---: |" + " ---: |" * len(methods + extra),
    ]
    for plane, entry in planes.items():
        cells = [_cell(entry["psnr_defocus"][name], "psnr_defocus") for name in methods]
        if amount:
            a = entry["blur_amount"]
            model = a["model"]
            cells += [_correlation(model["correlation"]), f"{model['mean']:.2f} / {a['target']['mean']:.2f}"]
        lines.append(f"| {plane} | {entry['samples']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sample_table(rows: list[dict], methods: list[str]) -> str:
    lines = [
        "| sample | plane | method | " + " | ".join(METRICS) + " | image |",
        "| --- | --- | --- |" + " ---: |" * len(METRICS) + " --- |",
    ]
    for row in rows:
        for i, name in enumerate(methods):
            image = f"[{row['image']}]({row['image']})" if i == 0 else ""
            lines.append(
                f"| {row['name']} | {row['plane']} | {name} | "
                + " | ".join(_cell(row[name][k], k) for k in METRICS)
                + f" | {image} |"
            )
    return "\n".join(lines)


def write_report(report: dict, folder: Path) -> None:
    (folder / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    s = report["settings"]
    if s["data"]:
        source = f"{s['data']} ({s['split']} split)"
    else:
        filtered = ", ".join(f"{k} {v}" for k, v in s["filtered"].items()) or "none"
        source = (
            f"{s['manifest']} (frames resized to a long side <= {s['frame_side']} px; planes filtered out: {filtered})"
        )
    renderer = ", ".join(f"{k}={v}" for k, v in (s["renderer"] or {}).items())
    text = [
        f"# Evaluation on {source}",
        "",
        f"- checkpoint: {s['checkpoint'] or 'none (baseline only)'}" + (f" ({s['arch']})" if s["arch"] else ""),
        f"- samples: {len(report['samples'])}; mask: {s['mask_kind']}; renderer: {renderer}",
        f"- the model runs as predict runs it (radii as trained at a long side of {s['max_side']} px, "
        f"strength {s['strength']:g}); "
        f"global_blur radii per mask level: {s['global_blur'] or 'not fitted (no checkpoint)'}",
        "- metrics over pixels with measured depth; PSNR in dB; plane sensitivity over the pixels out of focus in "
        "both masks of a fore/back pair (1 = the blur follows the focal plane as the targets do, 0 = ignores it); "
        "depth_gain / oracle_gap: the model's psnr_defocus minus global_blur's / oracle_blur's",
        "",
        "## Mean",
        "",
        mean_table(report["mean"]),
        "",
        "## Per focal plane (psnr_defocus)",
        "",
        plane_table(report["by_plane"]),
        "",
        *amount_section(report.get("blur_amount")),
        "## Samples",
        "",
        sample_table(report["samples"], list(report["mean"])),
        "",
    ]
    (folder / "report.md").write_text("\n".join(text))


def amount_line(amount: dict) -> str:
    """The amount of blur in a few sentences (printed and in report.md)."""
    model = amount["model"]
    lines = [
        "Amount of blur (mean blur radius out of focus, % of the long side; `mask_blur` is told each target's): "
        f"targets {amount['target']['mean']:.2f} on average."
    ]
    if model["asked"] is None:
        lines.append(
            f"The model's guess: {model['mean']:.2f} on average, correlation {_correlation(model['correlation'])} "
            f"with the targets', median ratio {model['median_ratio']:.2f}, median error {model['median_error']:.0%}."
        )
    else:
        lines.append(
            f"The model asked {model['asked']:g}: {model['mean']:.2f} on average, median ratio to the amount asked "
            f"{model['median_ratio']:.2f}, median error {model['median_error']:.0%}."
        )
    told = amount.get("model_told_amount")
    if told is not None:
        lines.append(
            f"The model told the target's: median ratio {told['median_ratio']:.2f}, median error "
            f"{told['median_error']:.0%}, correlation {_correlation(told['correlation'])}."
        )
    return " ".join(lines)


def amount_section(amount: dict | None) -> list[str]:
    """report.md's lines on the blur amount (none without it)."""
    if amount is None:
        return []
    return ["## Amount of blur", "", amount_line(amount), "", f"![amount of blur]({AMOUNT_PLOT})", ""]


# ----- output folder ------------------------------------------------------------------------------------------
def check_out_dir(out: Path) -> None:
    """`out` may be new, an empty folder or an earlier report (replaced); anything else is refused up front."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / "report.json").is_file():
        raise UserError(f"{out}: folder is not empty and holds no earlier report; choose another --out")
