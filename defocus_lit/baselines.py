"""Baselines that any trained generator must beat, with the generator's signature on a batch: fn(batch) -> output
(B,3,H,W) in [-1,1] for batch["mask"]. Every blur is a disk in linear light, as the renderer's, applied to each
mask level's pixels alone (`uniform_blur`: they spread over their disk, so no in-focus colour bleeds into the blurred
region, as in the renderer's layered targets); in-focus pixels keep the photo exactly.

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

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from defocus_lit.ops.blur import disk_stack, spread_blur
from defocus_lit.ops.color import linear_to_srgb, srgb_to_linear
from defocus_lit.ops.masks import BLURRED_LEVELS, blurred_levels, in_focus

Baseline = Callable[[dict[str, Tensor]], Tensor]
NAMES = ("identity", "mask_blur", "global_blur", "oracle_blur")
RADIUS_STEP = 0.5  # px, the grid global_blur and oracle_blur choose from: 0.5, 1.0, ..., max_radius


def radius_grid(max_radius: float) -> list[float]:
    """0.5, 1.0, ... up to `max_radius` px."""
    return [RADIUS_STEP * i for i in range(1, int(max_radius / RADIUS_STEP + 1e-6) + 1)] or [RADIUS_STEP]


def refine(errors_of: Callable[[list[int]], Tensor], size: int) -> Tensor:
    """(L,) indices into a radius grid of `size` (`radius_grid`) of least error per level, `errors_of(indices)` ->
    (L, len(indices)) giving the errors of those grid radii: the whole-pixel radii (every other one) first, then
    the two half-pixel neighbours of each level's best. Under half the evaluations of the whole grid (the
    baselines' set-up and first validation were a sixth of the CPU main job), and the same choice wherever the
    error has one minimum between neighbouring whole pixels."""
    coarse = list(range(1, size, 2)) or [0]
    best = torch.tensor(coarse)[errors_of(coarse).argmin(-1)]  # (L,)
    fine = sorted({int(i) + step for i in best for step in (-1, 0, 1)} & set(range(size)))
    near = (torch.tensor(fine)[None] - best[:, None]).abs() <= 1  # (L,F): each level's own three
    return torch.tensor(fine)[errors_of(fine).masked_fill(~near, math.inf).argmin(-1)]


def level_masks(batch: dict[str, Tensor]) -> Tensor:
    """(B,L,1,H,W) float: 1 where batch["mask"] is at blurred level BLURRED_LEVELS[l] and the depth is measured."""
    return blurred_levels(batch["mask"])[:, :, None] * batch["valid"][:, None]


def identity(batch: dict[str, Tensor]) -> Tensor:
    """The input photo: batch["image"] (B,3,H,W) in [-1,1]."""
    return batch["image"]


def _linear(batch: dict[str, Tensor]) -> Tensor:
    return srgb_to_linear((batch["image"].float() + 1) / 2)


def _layers(batch: dict[str, Tensor]) -> Tensor:
    """(B,1+L,H,W) float: the in-focus pixels, then each blurred mask level's (BLURRED_LEVELS), over every pixel."""
    levels = level_masks({**batch, "valid": torch.ones_like(batch["focus"])})[:, :, 0]
    return torch.cat([batch["focus"].float(), levels], 1)


def uniform_blur(batch: dict[str, Tensor], layers: Tensor, radii: Tensor) -> Tensor:
    """(B,3,H,W) in [-1,1]: the in-focus pixels and L blurred layers `layers` (B,1+L,H,W), each blurred layer's
    pixels spread with its disk of `radii` (B,L) px (`spread_blur`: in-focus pixels reach no blurred neighbour, as
    in the renderer's targets), the in-focus pixels the photo exactly."""
    linear = _linear(batch)
    radii = radii.detach().float().cpu()
    kernels = disk_stack([r for row in radii.tolist() for r in (0.0, *row)])
    kernels = kernels.view(*radii.shape[:1], radii.shape[1] + 1, *kernels.shape[-2:]).to(linear.device)
    out = torch.cat([spread_blur(linear[i : i + 1], layers[i : i + 1], kernels[i]) for i in range(len(radii))])
    return _keep_focus(batch, linear_to_srgb(out) * 2 - 1)


def _keep_focus(batch: dict[str, Tensor], blurred: Tensor) -> Tensor:
    return torch.where(batch["focus"] > 0.5, batch["image"], blurred.to(batch["image"].dtype))


def mask_blur(batch: dict[str, Tensor]) -> Tensor:
    """The photo blurred with one disk of radius batch["mean_radius"] (B,) px per sample outside the in-focus
    mask. A non-finite mean radius (a sample with no blurred pixel) counts as 0: no blur."""
    radius = torch.nan_to_num(batch["mean_radius"].detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    focus = batch["focus"].float()
    return uniform_blur(batch, torch.cat([focus, 1 - focus], 1), radius[:, None])


def level_errors(batch: dict[str, Tensor], radii: list[float]) -> Tensor:
    """(B,L,G) summed squared error ([0,1] scale) of each blurred mask level's pixels spread alone with each of
    `radii` (G) against the target, over the level's valid pixels."""
    target = ((batch["target"].float() + 1) / 2).clamp(0, 1)[:, None]
    linear, kernels = _linear(batch), disk_stack(radii).to(batch["image"].device)[:, None]
    errors = []
    for level in _layers(batch)[:, 1:, None].unbind(1):
        valid = level * batch["valid"]
        if not valid.any():
            errors.append(torch.zeros(linear.shape[0], len(radii), device=linear.device))
            continue
        sq = ((linear_to_srgb(spread_blur(linear, level, kernels)) - target) ** 2).sum(2)  # (B,G,H,W)
        errors.append((sq * valid).sum((-2, -1)))
    return torch.stack(errors, 1)


class GlobalBlur:
    """One disk radius per blurred mask level for every sample: the best a model that ignores the image can do.
    `fit` chooses them once, on the training split, as the radii of least squared error out of focus."""

    def __init__(self, radii: dict[float, float]) -> None:
        self.radii = {float(level): float(r) for level, r in radii.items()}

    @classmethod
    def fit(
        cls, batches: Iterable[dict[str, Tensor]], max_radius: float, device: torch.device | None = None
    ) -> GlobalBlur:
        """`batches` is read twice (a list or a DataLoader: whole pixels first, then their neighbours, `refine`),
        each batch moved to `device` (None: where it is)."""
        grid = radius_grid(max_radius)

        def total_errors(indices: list[int]) -> Tensor:
            total = None
            for batch in batches:
                batch = {key: value.to(device) for key, value in batch.items()} if device is not None else batch
                errors = level_errors(batch, [grid[i] for i in indices]).sum(0).double().cpu()  # (L,len(indices))
                total = errors if total is None else total + errors
            if total is None:
                raise ValueError("GlobalBlur.fit: no batch to fit on")
            return total

        best = refine(total_errors, len(grid))
        return cls({level: grid[int(best[i])] for i, level in enumerate(BLURRED_LEVELS)})

    def scaled(self, strength: float, max_radius: float) -> GlobalBlur:
        """The radii for targets rendered with the thin-lens k times `strength`: each times `strength`, clamped at
        `max_radius` px as the renderer clamps (the model's blur-stack head scales its radii alike)."""
        return GlobalBlur({level: min(r * strength, max_radius) for level, r in self.radii.items()})

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        """batch["radius_scale"] (B,), if present, scales the radii (for frames larger than the training scale;
        the batch shares its first sample's scale)."""
        scale = float(batch["radius_scale"][0]) if "radius_scale" in batch else 1.0
        radii = torch.tensor([self.radii.get(level, 0.0) * scale for level in BLURRED_LEVELS])
        return uniform_blur(batch, _layers(batch), radii.expand(batch["image"].shape[0], -1))


def oracle_blur_fn(max_radius: float) -> Baseline:
    """Per sample, the single radius per blurred mask level (from `radius_grid(max_radius)`) of highest PSNR against
    that sample's target out of focus. It knows the target: a model that beats it infers more than any uniform
    blur could."""
    grid = radius_grid(max_radius)

    def best_radii(sample: dict[str, Tensor]) -> Tensor:
        """(L,) px: one sample's best radius per level."""
        best = refine(lambda indices: level_errors(sample, [grid[i] for i in indices])[0].cpu(), len(grid))
        return torch.tensor(grid)[best]

    def oracle_blur(batch: dict[str, Tensor]) -> Tensor:
        samples = ({key: value[i : i + 1] for key, value in batch.items()} for i in range(len(batch["image"])))
        return uniform_blur(batch, _layers(batch), torch.stack([best_radii(sample) for sample in samples]))

    return oracle_blur


def baselines(global_blur: GlobalBlur | None, max_radius: float, names: Iterable[str] = NAMES) -> dict[str, Baseline]:
    """The baselines by name (global_blur only when its radii are known)."""
    methods: dict[str, Baseline] = {"identity": identity, "mask_blur": mask_blur}
    if global_blur is not None:
        methods["global_blur"] = global_blur
    methods["oracle_blur"] = oracle_blur_fn(max_radius)
    return {name: methods[name] for name in names if name in methods}


def alt_batch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The same frames with the opposite focal plane's mask, target and mean blur radius (for the plane sensitivity
    of a method)."""
    alt = {"mask": batch["alt_mask"], "focus": in_focus(batch["alt_mask"]), "target": batch["alt_target"]}
    return {**batch, **alt, **({"mean_radius": batch["alt_mean_radius"]} if "alt_mean_radius" in batch else {})}
