"""The mask convention shared by data, models and baselines: a mask (B,1,H,W) in [0,1], 0 = keep sharp (binary
0/1, patch 0/0.5/1)."""

from __future__ import annotations

import torch
from torch import Tensor

FOCUS_THRESHOLD = 0.25  # mask values below this are "keep sharp" (binary 0, patch 0)
BLURRED_LEVELS = (0.5, 1.0)  # the blurred levels: patch masks' partly and fully blurred; a binary mask has 1 only


def in_focus(mask: Tensor) -> Tensor:
    """(B,1,H,W) float 1 where `mask` says keep sharp, else 0."""
    return (mask < FOCUS_THRESHOLD).float()


def blurred_levels(mask: Tensor) -> Tensor:
    """(B,L,H,W) float: 1 where `mask` (B,1,H,W) is at blurred level BLURRED_LEVELS[l] (nearest of 0, 0.5, 1),
    else 0."""
    level = (mask * 2).round() / 2
    return torch.cat([(level == value).float() for value in BLURRED_LEVELS], 1)


def keep_focus(output: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """Sharp input where `mask` (B,1,H,W) says in focus, `output` elsewhere. (B,3,H,W) in [-1,1]."""
    focus = (mask < FOCUS_THRESHOLD).to(output.dtype)
    return focus * image + (1 - focus) * output
