"""Validation metrics: masked PSNR/SSIM and plane sensitivity, as DDP-safe torchmetrics.

Conventions, shared by the epoch metrics and by `per_sample_metrics` (one code path, `image_metrics`):

- Images arrive in [-1,1] and are scored on the [0,1] scale (clamped), so PSNR and SSIM use data range 1.0.
- Only pixels with `valid == 1` count (measured depth, not padding).
- PSNR is per image: MSE over the image's valid pixels (all three channels), then 10*log10(1/MSE); the epoch
  value is the mean of the per-image PSNRs (not the PSNR of the pooled MSE), so every image weighs the same
  whatever its size or number of valid pixels. Identical images would give +inf: PSNR is capped at
  `PSNR_CAP_DB` so one perfect image cannot make the mean infinite.
- `psnr_focus` / `psnr_defocus` are the same PSNR restricted to valid pixels with focus == 1 / focus == 0;
  an image with no such pixel is skipped for that metric (per sample: nan).
- SSIM: before SSIM the output takes the target's value on invalid pixels, so errors there do not leak into
  the windows of valid neighbours; the SSIM map (torchmetrics, Gaussian 11x11, sigma 1.5) is then averaged
  over valid pixels only, per image, and the epoch value is the mean over images.

All metric states are sums with `dist_reduce_fx="sum"`, so compute() is exact under DDP.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

from defocus_lit.ops.masks import FOCUS_THRESHOLD

PSNR_CAP_DB = 100.0
IMAGE_METRICS = ("psnr", "ssim", "psnr_focus", "psnr_defocus")


def to_unit(x: Tensor) -> Tensor:
    """Map an image from [-1,1] to [0,1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def masked_psnr(output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-image PSNR in dB over the pixels where `mask` is true.

    output, target: (B,C,H,W) in [0,1]; mask: (B,1,H,W) bool. Returns (B,): capped at PSNR_CAP_DB, nan for an
    image whose mask is empty.
    """
    weight = mask.to(output.dtype)
    count = weight.sum(dim=(1, 2, 3)) * output.shape[1]
    sq_err = ((output - target) ** 2 * weight).sum(dim=(1, 2, 3))
    mse = sq_err / count  # 0/0 = nan for an empty mask, which is what we want
    min_mse = 10.0 ** (-PSNR_CAP_DB / 10.0)
    psnr = -10.0 * torch.log10(mse.clamp(min=min_mse))
    return torch.where(count > 0, psnr, torch.full_like(psnr, math.nan))


def masked_ssim(output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-image SSIM averaged over the pixels where `mask` is true.

    output, target: (B,3,H,W) in [0,1]; mask: (B,1,H,W) bool. Returns (B,), nan for an image whose mask is empty.
    """
    output = torch.where(mask, output, target)
    _, ssim_map = structural_similarity_index_measure(
        output, target, data_range=1.0, reduction="none", return_full_image=True
    )
    weight = mask.to(ssim_map.dtype).expand_as(ssim_map)
    return (ssim_map * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3))


def image_metrics(output: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-image metrics of a batch: {name: (B,)} for every name in IMAGE_METRICS, nan where undefined.

    output: (B,3,H,W) in [-1,1]; batch: `target` (B,3,H,W) [-1,1], `focus` and `valid` (B,1,H,W) in {0,1}.
    """
    out = to_unit(output.detach().float())
    target = to_unit(batch["target"].float())
    valid = batch["valid"] > 0.5
    focus = batch["focus"] > 0.5
    return {
        "psnr": masked_psnr(out, target, valid),
        "ssim": masked_ssim(out, target, valid),
        "psnr_focus": masked_psnr(out, target, valid & focus),
        "psnr_defocus": masked_psnr(out, target, valid & ~focus),
    }


def per_sample_metrics(output: Tensor, batch: dict[str, Tensor]) -> list[dict[str, float]]:
    """`image_metrics` as one dict of floats per sample (for the evaluate report); nan where undefined."""
    values = {name: v.tolist() for name, v in image_metrics(output, batch).items()}
    return [{name: values[name][i] for name in IMAGE_METRICS} for i in range(output.shape[0])]


class DefocusMetrics(Metric):
    """Mean per-image psnr, ssim, psnr_focus and psnr_defocus over valid pixels (see the module docstring).

    update(output (B,3,H,W) [-1,1], batch); compute() -> {name: 0-dim tensor}; a metric no image defined is nan.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in IMAGE_METRICS:
            self.add_state(f"{name}_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
            self.add_state(f"{name}_count", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, output: Tensor, batch: dict[str, Tensor]) -> None:
        for name, values in image_metrics(output, batch).items():
            setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + torch.nansum(values))
            setattr(self, f"{name}_count", getattr(self, f"{name}_count") + (~torch.isnan(values)).sum())

    def compute(self) -> dict[str, Tensor]:
        return {name: getattr(self, f"{name}_sum") / getattr(self, f"{name}_count") for name in IMAGE_METRICS}


class PlaneSensitivity(Metric):
    """How much the output's blur changes with the focal plane, relative to how much the target's does.

    sum|out - alt_out| / sum|target - alt_target| over the pixels that are valid and out of focus in *both* masks
    of a frame's plane pair (`focus` and `alt_focus` 0), of the samples that have an alternative plane (`has_alt`).
    Restricted so, the keep-focus composite alone (sharp photo inside each mask) contributes nothing: a generator
    that ignores image and mask scores ~0, the renderer itself (targets as outputs) 1. Images share one scale (any:
    the ratio does not depend on it), (B,3,H,W); maps (B,1,H,W) in {0,1}; has_alt (B,) bool. The ratio of sums
    equals the design's ratio of means over the same pixels. compute() is nan while no target pair differed.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("output_diff", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("target_diff", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, out: Tensor, alt_out: Tensor, batch: dict[str, Tensor]) -> None:
        """out / alt_out for batch["mask"] / batch["alt_mask"]; uses target, alt_target, valid, focus, alt_mask,
        has_alt of the batch."""
        blurred_in_both = (batch["focus"] < 0.5) & ~(batch["alt_mask"] < FOCUS_THRESHOLD)
        weight = ((batch["valid"] > 0.5) & blurred_in_both).float() * batch["has_alt"].view(-1, 1, 1, 1).float()
        self.output_diff += ((out.detach().float() - alt_out.detach().float()).abs() * weight).sum()
        self.target_diff += ((batch["target"].float() - batch["alt_target"].float()).abs() * weight).sum()

    def compute(self) -> Tensor:
        nan = torch.full_like(self.target_diff, math.nan)
        return torch.where(self.target_diff > 0, self.output_diff / self.target_diff, nan)


class MetricSet(nn.Module):
    """DefocusMetrics and PlaneSensitivity under one name prefix (e.g. "val/", "baseline/identity/val/").

    A module, so it follows its LightningModule to the device. compute() -> flat {prefix + name: 0-dim tensor}
    with the IMAGE_METRICS names plus "plane_sensitivity" (nan if update_plane never saw a pair).
    """

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix
        self.image = DefocusMetrics()
        self.plane = PlaneSensitivity()

    def update(self, output: Tensor, batch: dict[str, Tensor]) -> None:
        """output (B,3,H,W) [-1,1] for batch["mask"]."""
        self.image.update(output, batch)

    def update_plane(self, output: Tensor, alt_output: Tensor, batch: dict[str, Tensor]) -> None:
        """output / alt_output (B,3,H,W) [-1,1] for batch["mask"] / batch["alt_mask"]."""
        self.plane.update(output, alt_output, batch)

    def compute(self) -> dict[str, Tensor]:
        values = dict(self.image.compute(), plane_sensitivity=self.plane.compute())
        return {self.prefix + name: value for name, value in values.items()}

    def reset(self) -> None:
        self.image.reset()
        self.plane.reset()
