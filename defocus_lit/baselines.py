"""Baselines that any trained generator must beat, with the generator's signature on a batch: fn(batch) -> output
(B,3,H,W) in [-1,1] for batch["mask"]. Every blur is a disk in linear light, as the renderer's; in-focus pixels
keep the photo exactly.

- `identity`: the photo. Beating it shows the model defocuses at all.
- `mask_blur`: one disk of the sample's true mean radius outside the mask. Beating it: more than a blur told how
  much blur there is.
- `global_blur`: one disk radius per mask level, fitted once on the training split. Beating it: more than any
  image-blind model could learn.
- `oracle_blur`: per sample, the best single radius per mask level for that target. Beating it: more than any
  uniform blur, even one that knows the answer.

Mask levels: a binary mask has one blurred level (1), a patch mask two (0.5 partial, 1 full).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from defocus_lit.ops.blur import disk_blur, disk_stack, fft_blur
from defocus_lit.ops.color import linear_to_srgb, srgb_to_linear
from defocus_lit.ops.masks import in_focus

Baseline = Callable[[dict[str, Tensor]], Tensor]
NAMES = ("identity", "mask_blur", "global_blur", "oracle_blur")
LEVELS = (0.5, 1.0)  # blurred mask levels; a binary mask uses 1.0 only
RADIUS_STEP = 0.5  # px, the grid global_blur and oracle_blur choose from: 0.5, 1.0, ..., max_radius


def radius_grid(max_radius: float) -> list[float]:
    """0.5, 1.0, ... up to `max_radius` px."""
    return [RADIUS_STEP * i for i in range(1, int(max_radius / RADIUS_STEP + 1e-6) + 1)] or [RADIUS_STEP]


def level_masks(batch: dict[str, Tensor]) -> Tensor:
    """(B,L,1,H,W) float: 1 where batch["mask"] is at blurred level LEVELS[l] and the depth is measured."""
    level = (batch["mask"] * 2).round() / 2
    return torch.stack([(level == v).float() * batch["valid"] for v in LEVELS], 1)


def identity(batch: dict[str, Tensor]) -> Tensor:
    """The input photo: batch["image"] (B,3,H,W) in [-1,1]."""
    return batch["image"]


def _linear(batch: dict[str, Tensor]) -> Tensor:
    return srgb_to_linear((batch["image"].float() + 1) / 2)


def _keep_focus(batch: dict[str, Tensor], blurred: Tensor) -> Tensor:
    return torch.where(batch["focus"] > 0.5, batch["image"], blurred.to(batch["image"].dtype))


def mask_blur(batch: dict[str, Tensor]) -> Tensor:
    """The photo blurred with one disk of radius batch["mean_radius"] (B,) px per sample outside the in-focus
    mask. A non-finite mean radius (a sample with no blurred pixel) counts as 0: no blur."""
    radius = torch.nan_to_num(batch["mean_radius"].detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    return _keep_focus(batch, linear_to_srgb(disk_blur(_linear(batch), radius)) * 2 - 1)


def blur_stack(batch: dict[str, Tensor], radii: list[float]) -> Tensor:
    """(B,G,3,H,W) sRGB in [0,1]: the photo blurred with each of `radii`."""
    return linear_to_srgb(fft_blur(_linear(batch), disk_stack(radii).to(batch["image"].device)))


def level_errors(batch: dict[str, Tensor], stack: Tensor) -> Tensor:
    """(B,L,G) summed squared error ([0,1] scale) of each blur in `stack` (B,G,3,H,W) against the target, over the
    valid pixels of each blurred mask level."""
    target = ((batch["target"].float() + 1) / 2).clamp(0, 1)[:, None]
    sq = ((stack - target) ** 2).sum(2)  # (B,G,H,W)
    return torch.einsum("bghw,blhw->blg", sq, level_masks(batch)[:, :, 0])


def _compose(batch: dict[str, Tensor], stack: Tensor, choice: Tensor) -> Tensor:
    """The blur `choice` (B,L) (indices into the stack's G) on each level's pixels, the photo elsewhere."""
    b = torch.arange(stack.shape[0], device=stack.device)[:, None]
    chosen = stack[b, choice]  # (B,L,3,H,W)
    levels = level_masks({**batch, "valid": torch.ones_like(batch["valid"])})
    out = (chosen * levels).sum(1) * 2 - 1
    return _keep_focus(batch, out)


class GlobalBlur:
    """One disk radius per blurred mask level for every sample: the best a model that ignores the image can do.
    `fit` chooses them once, on the training split, as the radii of least squared error out of focus."""

    def __init__(self, radii: dict[float, float]) -> None:
        self.radii = {float(level): float(r) for level, r in radii.items()}

    @classmethod
    def fit(cls, batches: Iterable[dict[str, Tensor]], max_radius: float) -> GlobalBlur:
        grid = radius_grid(max_radius)
        total = None
        for batch in batches:
            errors = level_errors(batch, blur_stack(batch, grid)).sum(0).double().cpu()  # (L,G)
            total = errors if total is None else total + errors
        if total is None:
            raise ValueError("GlobalBlur.fit: no batch to fit on")
        return cls({level: grid[int(total[i].argmin())] for i, level in enumerate(LEVELS)})

    def scaled(self, strength: float, max_radius: float) -> GlobalBlur:
        """The radii for targets rendered with the thin-lens k times `strength`: each times `strength`, clamped at
        `max_radius` px as the renderer clamps (the model's blur-stack head scales its radii alike)."""
        return GlobalBlur({level: min(r * strength, max_radius) for level, r in self.radii.items()})

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        """batch["radius_scale"] (B,), if present, scales the radii (for frames larger than the training scale;
        the batch shares its first sample's scale)."""
        scale = float(batch["radius_scale"][0]) if "radius_scale" in batch else 1.0
        radii = [self.radii.get(level, 0.0) * scale for level in LEVELS]
        choice = torch.arange(len(LEVELS), device=batch["image"].device).expand(batch["image"].shape[0], -1)
        return _compose(batch, blur_stack(batch, radii), choice)


def oracle_blur_fn(max_radius: float) -> Baseline:
    """Per sample, the single radius per blurred mask level (from `radius_grid(max_radius)`) of highest PSNR against
    that sample's target out of focus. It knows the target: a model that beats it infers more than any uniform
    blur could."""
    grid = radius_grid(max_radius)

    def oracle_blur(batch: dict[str, Tensor]) -> Tensor:
        stack = blur_stack(batch, grid)
        return _compose(batch, stack, level_errors(batch, stack).argmin(2))

    return oracle_blur


def baselines(global_blur: GlobalBlur | None, max_radius: float, names: Iterable[str] = NAMES) -> dict[str, Baseline]:
    """The baselines by name (global_blur only when its radii are known)."""
    methods: dict[str, Baseline] = {"identity": identity, "mask_blur": mask_blur}
    if global_blur is not None:
        methods["global_blur"] = global_blur
    methods["oracle_blur"] = oracle_blur_fn(max_radius)
    return {name: methods[name] for name in names if name in methods}


def alt_batch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The same frames with the opposite focal plane's mask and target (for the plane sensitivity of a method)."""
    return {**batch, "mask": batch["alt_mask"], "focus": in_focus(batch["alt_mask"]), "target": batch["alt_target"]}
