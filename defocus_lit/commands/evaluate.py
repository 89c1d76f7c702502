"""`defocus-lit evaluate`: score a checkpoint and the baselines on held-out data and write a report.

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

`--strength S` (as in predict; default 1): the model runs with its blur radii times S (clamped at the top of its
blur stack) and the manifest's targets are rendered with k times S (max_radius unchanged): the same wider aperture.
global_blur's radii are scaled and clamped alike (fitted at strength 1); mask_blur and oracle_blur are told the
targets' blur. `--data` needs strength 1: the file's targets are rendered at one k.

Methods: the checkpoint's model (`--ckpt`), for a blur-head model also `model_told_amount` (its radii scaled per
sample so that their mean out of focus is the target's, the amount `mask_blur` is told: how much of the model's gap
is the amount), and the baselines (`defocus_lit.baselines`): identity, mask_blur,
global_blur (its radii fitted on the checkpoint's training split, so it needs `--ckpt`) and oracle_blur;
`--baseline NAME` keeps only that baseline (alone when there is no `--ckpt`). Metrics (defocus_lit.metrics) count
only pixels with a depth measurement; plane sensitivity compares a frame's fore and back samples over the pixels out
of focus in both (nan/null for a sample with no opposite plane); the model's depth_gain and oracle_gap are its
psnr_defocus minus global_blur's and oracle_blur's, per sample and for the means.

Output, written to a temporary folder renamed to `--out` at the end (a failure leaves no partial folder):
`report.json` {"mean": {method: {metric: value}}, "by_plane": {plane: {"samples", "psnr_defocus": {method:
value}[, "blur_amount"]}}, "samples": [{"name", "plane", method: {metric: value}}], "settings": {...}}, `report.md`
(the same tables in Markdown) and one PNG per sample
(input | mask | output | target | abs error x4; the output is the model's, else the baseline's). A model with a
blur-stack head also gets the blur amount: per sample its mean blur radius out of focus next to the target's
(`"blur_radius": {"model", "target"}` px), their correlation and means over the samples (`"blur_amount"`), and
`blur_amount.png`, the one against the other per focal plane: how much of the amount the model reads from the
photo, which `mask_blur` is told.
"""

from __future__ import annotations

import argparse
import json
import math
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
from defocus_lit.commands import add_inference_options
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
    check_max_side,
    check_strength,
    generator_output,
    radius_scale,
    select_device,
)
from defocus_lit.render import BLUR_MODELS, RenderSettings
from defocus_lit.visualize import panel_row, scatter_plot

GAINS = ("depth_gain", "oracle_gap")
METRICS = (*IMAGE_METRICS, "plane_sensitivity", *GAINS)
FRAME_SIDE = 256  # px: manifest frames are resized to this long side (the scale of the renderer's k)
ERROR_GAIN = 4.0  # the abs-error panel is amplified so small errors show
AMOUNT_PLOT = "blur_amount.png"
OPPOSITE = {"fore": "back", "back": "fore"}
Method = Callable[[dict[str, Tensor]], Tensor]
RadiusOf = Callable[[dict[str, Tensor]], Tensor | None]  # batch -> the model's blur radius (B,1,H,W) px


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", help="checkpoint from `defocus-lit train`; leave out to score --baseline alone")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="HDF5 dataset from `defocus-lit data build` (test split, else val)")
    source.add_argument("--manifest", help="CSV image,depth[,kind,scale]: targets rendered on the fly")
    parser.add_argument("--out", required=True, help="report folder (replaced if it holds an earlier report)")
    parser.add_argument(
        "--baseline",
        choices=BASELINE_NAMES,
        help="score only this baseline (with --ckpt: the model and this baseline)",
    )
    parser.add_argument("--limit", type=int, help="score only the first N samples")
    add_inference_options(parser)
    render = parser.add_argument_group("manifest frames and renderer overrides (--manifest only)")
    render.add_argument(
        "--frame-side",
        type=int,
        default=FRAME_SIDE,
        metavar="PX",
        help=f"resize frames whose long side is larger to this many px (default {FRAME_SIDE})",
    )
    render.add_argument("--blur-model", choices=BLUR_MODELS)
    render.add_argument("--k", type=float, help="thin-lens blur in px per unit of inverse depth")
    render.add_argument("--max-radius", type=float, help="largest blur radius in px")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_out_dir(out)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit: must be at least 1, got {args.limit}")
    if args.frame_side < 16:
        raise UserError(f"--frame-side: must be at least 16 px, got {args.frame_side}")
    check_max_side(args.max_side)
    overrides = {key: getattr(args, key) for key in ("blur_model", "k", "max_radius") if getattr(args, key) is not None}
    if args.data and overrides:
        flags = ", ".join("--" + key.replace("_", "-") for key in overrides)
        raise UserError(
            f"{flags}: renderer settings apply to --manifest only (the targets in {args.data} are already rendered)"
        )
    if args.ckpt is None and args.baseline is None:
        raise UserError("--ckpt: give a checkpoint, or --baseline NAME to score a baseline alone")
    device = select_device(args.device)
    model = cfg = global_blur = None
    if args.ckpt:
        checkpoint = read_checkpoint(args.ckpt)
        model, cfg = defocuser_of(checkpoint, args.ckpt)
        model.to(device)
        fitted = extras_of(checkpoint).get("global_blur")
        global_blur = GlobalBlur({float(k): v for k, v in fitted.items()}) if fitted else None
    check_strength(model, args.strength)
    if args.data and args.strength != 1:
        raise UserError(
            f"--strength {args.strength:g}: applies to --manifest only (the targets in {args.data} are already "
            "rendered at one k)"
        )
    if args.baseline == "global_blur" and global_blur is None:
        raise UserError(
            "--baseline global_blur: needs --ckpt of a run that fitted it on its training split "
            "(checkpoints from before global_blur have none)"
        )
    mask_kind = cfg.data.mask_kind if cfg is not None else "binary"

    if args.data:
        samples, total, details = dataset_samples(Path(args.data), mask_kind, device, cfg)
        max_radius = float(details["renderer"]["max_radius"])
    else:
        settings = manifest_settings(cfg, overrides, args.strength)
        samples, total, details = manifest_samples(
            Path(args.manifest), settings, mask_kind, args.frame_side, args.max_side, device, trained_photos(cfg)
        )
        if details["trained_on"]:
            print(
                f"left out {len(details['trained_on'])} frame(s) the checkpoint trained on ({cfg.data.path}): "
                + ", ".join(details["trained_on"])
            )
        max_radius = settings["max_radius"] * radius_scale(args.frame_side, args.max_side)
        global_blur = global_blur.scaled(args.strength, settings["max_radius"]) if global_blur else None
    names = BASELINE_NAMES if args.baseline is None else (args.baseline,)
    runs = GeneratorRuns(model, args.max_side, args.strength) if model is not None else None
    methods = build_methods(runs, baselines(global_blur, max_radius, names))
    radius_of = (
        (lambda batch: model.head.expected_radius(*runs(batch), strength=runs.head_strength))
        if model is not None and model.head is not None
        else None
    )
    info = {
        "checkpoint": args.ckpt,
        "arch": cfg.arch if cfg is not None else None,
        "data": args.data,
        "manifest": args.manifest,
        "mask_kind": mask_kind,
        "device": device.type,
        "max_side": args.max_side,
        "strength": args.strength,
        "global_blur": global_blur.radii if global_blur else None,
        **details,
    }

    with atomic_path(out, folder=True) as staging:
        report = evaluate(
            methods,
            samples,
            staging,
            device,
            limit=args.limit,
            total=total,
            source=args.data or args.manifest,
            radius_of=radius_of,
        )
        report["settings"] = info
        write_report(report, staging)
    print(mean_table(report["mean"]))
    if "blur_amount" in report:
        print(amount_line(report["blur_amount"]))
    print(f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(report['samples'])} sample images")
    return 0


# ----- methods ------------------------------------------------------------------------------------------------
class GeneratorRuns:
    """The generator's output for a batch's image and mask as predict runs it at `strength` (`generator_output`:
    the output and the head's radius scale), kept for the last two image-and-mask pairs. Every model method of a
    sample (the model, told the amount, its blur radius) reads one run for the sample's mask and one for the
    opposite plane's, where each method running its own would take five per sample. `head_strength`: the head's
    radius multiplier for `strength` (`Defocuser.head_strength`)."""

    def __init__(self, model: Defocuser, max_side: int, strength: float = 1.0) -> None:
        self.model, self.max_side, self.strength = model, max_side, strength
        self.head_strength = model.head_strength(strength)
        self._recent: list[tuple[Tensor, Tensor, tuple[Tensor, float]]] = []  # holds the tensors: ids stay unique

    @torch.inference_mode()
    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, float]:
        image, mask = batch["image"], batch["mask"]
        for seen_image, seen_mask, output in self._recent:
            if seen_image is image and seen_mask is mask:
                return output
        output = generator_output(self.model, image, mask, self.max_side, self.strength)
        self._recent = [*self._recent[-1:], (image, mask, output)]
        return output


def build_methods(runs: GeneratorRuns | None, baseline_methods: dict[str, Method]) -> dict[str, Method]:
    """name -> fn(batch) -> output (B,3,H,W) in [-1,1] for batch["mask"]: the model as predict runs it (`defocus`)
    at the runs' strength, then the baselines."""
    methods: dict[str, Method] = {}
    if runs is not None:
        model = runs.model
        methods["model"] = lambda batch: model.finish(
            batch["image"], batch["mask"], *runs(batch), strength=runs.head_strength
        )
        if model.head is not None:
            methods["model_told_amount"] = told_amount(runs)
    return methods | baseline_methods


def told_amount(runs: GeneratorRuns) -> Method:
    """The model with its blur radii scaled per sample so that their mean out of focus is the target's, the amount
    `mask_blur` is told: its gap to the model is what misreading the amount costs, its gap to `mask_blur` what the
    model knows about where to blur more and where less. The scaled radii are clamped at the top one (as any
    strength), so a sample the model under-blurs at its top radius stays under-blurred."""
    model, strength = runs.model, runs.head_strength

    @torch.inference_mode()
    def run(batch: dict[str, Tensor]) -> Tensor:
        raw, scale = runs(batch)
        radius = mean_blur_radius(model.head.expected_radius(raw, radius_scale=scale, strength=strength), batch)
        factor = max(radius["target"], 1e-3) / max(radius["model"], 1e-3)
        return model.finish(batch["image"], batch["mask"], raw, radius_scale=scale, strength=strength * factor)

    return run


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
    radius_of: RadiusOf | None = None,
) -> dict:
    """Score every sample with every method, write one panel PNG per sample into `out_dir`; the report dict.
    `source` names the data in the error raised when there is no sample. With `radius_of` (the model's blur
    radius), also the blur amount per sample and overall, and `blur_amount.png` (see the module's docstring)."""
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
        if radius_of is not None:
            row["blur_radius"] = mean_blur_radius(radius_of(sample.batch), sample.batch)
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
    if radius_of is not None:
        report["blur_amount"] = blur_amount(rows)
        write_rgb(out_dir / AMOUNT_PLOT, amount_plot(rows, report["blur_amount"]["correlation"]))
    return report


def mean_blur_radius(radius: Tensor, batch: dict[str, Tensor]) -> dict[str, float]:
    """One sample's mean blur radius (px) over its pixels out of focus, the model's (`radius` (1,1,H,W)) and the
    target's (batch["mean_radius"], over the same pixels)."""
    blurred = 1 - batch["focus"].float()
    model = float((radius.float() * blurred).sum() / blurred.sum().clamp_min(1))
    return {"model": model, "target": float(batch["mean_radius"][0])}


def blur_amount(rows: list[dict]) -> dict[str, float | None]:
    """Over the samples: the correlation of the model's mean blur radius with the target's (None for fewer than
    two samples or no spread) and both means (px)."""
    model, target = (np.array([row["blur_radius"][key] for row in rows]) for key in ("model", "target"))
    spread = len(rows) > 1 and model.std() > 0 and target.std() > 0
    return {
        "correlation": float(np.corrcoef(model, target)[0, 1]) if spread else None,
        "mean_model": float(model.mean()),
        "mean_target": float(target.mean()),
    }


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
            **({"blur_amount": blur_amount(group)} if "blur_radius" in group[0] else {}),
        }
    return planes


def _mean(values: list[float | None]) -> float | None:
    """The mean of the defined values (None where none is)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _correlation(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def amount_plot(rows: list[dict], correlation: float | None) -> np.ndarray:
    """The model's mean blur radius per sample against the target's, one colour per focal plane."""
    points = {
        plane: [(row["blur_radius"]["target"], row["blur_radius"]["model"]) for row in rows if row["plane"] == plane]
        for plane in PLANES
    }
    points = {plane: group for plane, group in points.items() if group}
    title = f"mean blur radius out of focus per sample (correlation {_correlation(correlation)})"
    return scatter_plot(points, "target (px)", "model (px)", title)


def _add_gains(methods: dict) -> None:
    """The model's depth_gain and oracle_gap from its and the baselines' psnr_defocus (None where not defined)."""
    if "model" not in methods:
        return
    values = {
        f"baseline/{name}/psnr_defocus": v["psnr_defocus"]
        for name, v in methods.items()
        if isinstance(v, dict) and v.get("psnr_defocus") is not None
    }
    if methods["model"]["psnr_defocus"] is not None:
        values["psnr_defocus"] = methods["model"]["psnr_defocus"]
    methods["model"].update(gains(values, prefix=""))


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
    """psnr_defocus per focal plane and method, with the blur amount's correlation and means where known."""
    methods = list(next(iter(planes.values()))["psnr_defocus"]) if planes else []
    amount = any("blur_amount" in entry for entry in planes.values())
    extra = ["amount correlation", "radius model / target (px)"] if amount else []
    lines = [
        "| plane | samples | " + " | ".join(methods + extra) + " |",
        "| --- | ---: |" + " ---: |" * len(methods + extra),
    ]
    for plane, entry in planes.items():
        cells = [_cell(entry["psnr_defocus"][name], "psnr_defocus") for name in methods]
        if amount:
            a = entry["blur_amount"]
            cells += [_correlation(a["correlation"]), f"{a['mean_model']:.2f} / {a['mean_target']:.2f}"]
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
    """The blur amount in one sentence (printed and in report.md)."""
    return (
        "The model's mean blur radius out of focus per sample against the target's: correlation "
        f"{_correlation(amount['correlation'])}; mean {amount['mean_model']:.2f} px against "
        f"{amount['mean_target']:.2f} px. `mask_blur` is told each target's."
    )


def amount_section(amount: dict | None) -> list[str]:
    """report.md's lines on the blur amount (none without it)."""
    if amount is None:
        return []
    return ["## Blur amount", "", amount_line(amount), "", f"![blur amount]({AMOUNT_PLOT})", ""]


# ----- output folder ------------------------------------------------------------------------------------------
def check_out_dir(out: Path) -> None:
    """`out` may be new, an empty folder or an earlier report (replaced); anything else is refused up front."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / "report.json").is_file():
        raise UserError(f"{out}: folder is not empty and holds no earlier report; choose another --out")
