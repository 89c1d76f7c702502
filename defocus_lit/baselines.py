"""Baselines that any trained generator must beat, with the generator's signature on a batch.

- `identity`: return the input photo unchanged (the paper's failure mode: no defocus at all).
- `mask_blur`: blur everything outside the in-focus mask with one disk of the sample's mean target blur radius
  (`batch["mean_radius"]`, an oracle of how much blur there is, but with no depth: one radius everywhere and
  no occlusion). In linear light, as the renderer.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len
from torch import Tensor

from defocus_lit.render import disk_kernel, linear_to_srgb, srgb_to_linear

Baseline = Callable[[dict[str, Tensor]], Tensor]
_EPS = 1e-8


def identity(batch: dict[str, Tensor]) -> Tensor:
    """The input photo: batch["image"] (B,3,H,W) in [-1,1]."""
    return batch["image"]


def disk_stack(radii: list[float]) -> Tensor:
    """(B,K,K) disk kernels of the given radii, each zero-padded (centred) to the largest one's size K."""
    kernels = [disk_kernel(r) for r in radii]
    half = max(k.shape[-1] // 2 for k in kernels)
    return torch.stack([F.pad(k, [half - k.shape[-1] // 2] * 4) for k in kernels])


def disk_blur(x: Tensor, radius: Tensor) -> Tensor:
    """Blur each sample with a disk of its own radius, all in one batched FFT.

    x (B,C,H,W); radius (B,) px (below 0.5 px: no blur, as `disk_kernel`). Borders as in the renderer: zero
    padding, then division by the blurred coverage, so the disk is renormalised over the pixels inside the frame.
    Returns (B,C,H,W).
    """
    kernels = disk_stack(radius.tolist()).to(x)
    half = kernels.shape[-1] // 2
    if half == 0:
        return x
    height, width = x.shape[-2:]
    stacked = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # last channel: coverage
    size = (next_fast_len(height + 2 * half, real=True), next_fast_len(width + 2 * half, real=True))
    spectrum = torch.fft.rfft2(stacked, s=size) * torch.fft.rfft2(kernels[:, None], s=size)
    blurred = torch.fft.irfft2(spectrum, s=size)[..., half : half + height, half : half + width]
    return blurred[:, :-1] / blurred[:, -1:].clamp_min(_EPS)


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
