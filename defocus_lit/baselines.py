"""Baselines that any trained generator must beat, with the generator's signature on a batch.

- `identity`: return the input photo unchanged (the paper's failure mode: no defocus at all).
- `mask_blur`: blur everything outside the in-focus mask with one disk of the sample's mean target blur radius
  (`batch["mean_radius"]`, an oracle of how much blur there is, but with no depth: one radius everywhere and
  no occlusion). In linear light, as the renderer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from defocus_lit.ops.blur import disk_blur
from defocus_lit.ops.color import linear_to_srgb, srgb_to_linear
from defocus_lit.ops.masks import in_focus

Baseline = Callable[[dict[str, Tensor]], Tensor]


def identity(batch: dict[str, Tensor]) -> Tensor:
    """The input photo: batch["image"] (B,3,H,W) in [-1,1]."""
    return batch["image"]


def mask_blur(batch: dict[str, Tensor]) -> Tensor:
    """The photo blurred (linear light) with one disk of radius batch["mean_radius"] (B,) px per sample where
    batch["focus"] (B,1,H,W) == 0; in-focus pixels keep the photo exactly. Returns (B,3,H,W) in [-1,1].

    A non-finite mean radius (a sample with no blurred pixel) counts as 0: no blur.
    """
    image = batch["image"]
    radius = torch.nan_to_num(batch["mean_radius"].detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    linear = srgb_to_linear((image.float() + 1) / 2)
    blurred = linear_to_srgb(disk_blur(linear, radius)) * 2 - 1
    return torch.where(batch["focus"] > 0.5, image, blurred.to(image.dtype))


BASELINES: dict[str, Baseline] = {"identity": identity, "mask_blur": mask_blur}


def alt_batch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The same frames with the opposite focal plane's mask and target (for the plane sensitivity of a method)."""
    return {**batch, "mask": batch["alt_mask"], "focus": in_focus(batch["alt_mask"]), "target": batch["alt_target"]}
