"""Per-pixel blur radius in px from nearness (thin lens) or from a focal-plane map (the paper's blur map)."""

from __future__ import annotations

from torch import Tensor


def blur_radius_thin_lens(near: Tensor, band: Tensor, k: float, max_radius: float) -> Tensor:
    """Thin-lens blur radius in px: k * distance of `near` to the in-focus band, 0 inside, clamped.

    near (B,1,H,W) inverse depth (larger = nearer); band (B,2) = (lo, hi) in the same units."""
    lo = band[:, 0].view(-1, 1, 1, 1).to(near)
    hi = band[:, 1].view(-1, 1, 1, 1).to(near)
    dist = (lo - near).clamp_min(0) + (near - hi).clamp_min(0)
    return (k * dist).clamp(0, max_radius)


def blur_radius_blur_map(plane_map: Tensor, max_radius: float) -> Tensor:
    """The paper's blur-map model: radius = max_radius * plane / 255 px. plane_map (B,1,H,W) in 0..255."""
    return (max_radius * plane_map / 255.0).clamp(0, max_radius)
