"""sRGB <-> linear light (IEC 61966-2-1). Blurs happen in linear light so that highlights bloom as real bokeh does."""

from __future__ import annotations

import torch
from torch import Tensor


def srgb_to_linear(x: Tensor) -> Tensor:
    """sRGB in [0,1] -> linear light in [0,1]. Powers as exp/log, which vectorise."""
    x = x.clamp(0, 1)
    curve = x.add(0.055).div_(1.055).log_().mul_(2.4).exp_()
    return torch.where(x <= 0.04045, x / 12.92, curve)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Linear light in [0,1] -> sRGB in [0,1]. Differentiable (the blur-stack head trains through it)."""
    x = x.clamp(0, 1)
    curve = x.clamp_min(0.0031308).log().div(2.4).exp().mul(1.055).sub(0.055)
    return torch.where(x <= 0.0031308, x * 12.92, curve)
