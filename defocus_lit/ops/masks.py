"""The mask convention shared by data, models and baselines: a mask (B,1,H,W) in [0,1], 0 = keep sharp (binary
0/1, patch 0/0.5/1)."""

from __future__ import annotations

from torch import Tensor

FOCUS_THRESHOLD = 0.25  # mask values below this are "keep sharp" (binary 0, patch 0)


def in_focus(mask: Tensor) -> Tensor:
    """(B,1,H,W) float 1 where `mask` says keep sharp, else 0."""
    return (mask < FOCUS_THRESHOLD).float()


def keep_focus(output: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """Sharp input where `mask` (B,1,H,W) says in focus, `output` elsewhere. (B,3,H,W) in [-1,1]."""
    focus = (mask < FOCUS_THRESHOLD).to(output.dtype)
    return focus * image + (1 - focus) * output
