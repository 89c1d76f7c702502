"""Focal planes and masks from depth (paper section 3.1).

A frame's depth becomes a grey map 0..255 with near = 0 (black). Each focal plane is a "plane map" 0..255 where
0 = in focus and larger = further from the focal plane: foreground = grey, background = 255 - grey,
midground = |grey - median| rescaled. Masks threshold a plane map; the depth weight is 1 - plane/255.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from defocus_lit.errors import UserError

PLANES = ("fore", "mid", "back", "random")  # "random": focused at a random grey level (augmentation)
PAPER_PLANES = PLANES[:3]  # the paper's planes: what datasets hold by default and what `evaluate` scores
MASK_KINDS = ("binary", "patch")  # what a network is given: `binary_mask` or `patch_mask`
REJECT_REASONS = ("no_focus", "focus_too_small", "mostly_in_focus", "invalid_depth")
_PERCENTILES = (1.0, 99.0)


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """bool (H,W): the measured pixels, finite and > 0."""
    return np.isfinite(depth) & (depth > 0)


def fill_invalid(depth: np.ndarray) -> np.ndarray:
    """float32 (H,W): invalid pixels take the value of the nearest valid pixel (Euclidean)."""
    valid = valid_depth(depth)
    if valid.all():
        return depth.astype(np.float32, copy=True)
    if not valid.any():
        raise UserError("depth: no valid depth pixel to fill from")
    indices = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return depth[tuple(indices)].astype(np.float32)


def _percentile_range(values: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values[valid], _PERCENTILES)
    return float(lo), float(hi)


def _normalise(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(values - lo) / (hi - lo) clipped to 0..1; a flat map (hi == lo) gives all zeros."""
    span = hi - lo
    if span <= 0:
        return np.zeros(values.shape, np.float32)
    return np.clip((values - lo) / span, 0.0, 1.0).astype(np.float32)


def _check_kind(kind: str) -> None:
    if kind not in ("depth", "disparity"):
        raise UserError(f"kind: unknown depth kind '{kind}' (valid: depth, disparity)")


def nearness(depth: np.ndarray, kind: str) -> np.ndarray:
    """float32 (H,W), larger = nearer: 1/metres for kind "depth" (on the filled depth); for "disparity" the
    disparity normalised to 0..1 by its 1st..99th percentile over valid pixels, clipped."""
    _check_kind(kind)
    filled = fill_invalid(depth)
    if kind == "depth":
        return (1.0 / filled).astype(np.float32)
    return _normalise(filled, *_percentile_range(depth, valid_depth(depth)))


def depth_grey(depth: np.ndarray, kind: str) -> np.ndarray:
    """float32 (H,W) 0..255, near = 0: the paper's grey depth map.

    kind "depth": 255 * (d - d_lo) / (d_hi - d_lo) clipped, d_lo/d_hi the 1st/99th percentile of the valid depth.
    kind "disparity": 255 * (1 - normalised disparity), so near is black as well. Invalid pixels are filled.
    """
    _check_kind(kind)
    if kind == "disparity":
        return (255.0 * (1.0 - nearness(depth, kind))).astype(np.float32)
    filled = fill_invalid(depth)
    return (255.0 * _normalise(filled, *_percentile_range(depth, valid_depth(depth)))).astype(np.float32)


def _distance_plane(grey: np.ndarray, level: float) -> np.ndarray:
    """|grey - level| rescaled so the furthest possible grey (0 or 255) maps to 255."""
    span = max(level, 255.0 - level)
    return (np.abs(grey - np.float32(level)) / np.float32(span) * 255).astype(np.float32)


def focal_plane(
    grey: np.ndarray, plane: str, mid: float | None = None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """float32 (H,W) 0..255, 0 = in focus. `mid` is the midground's focal grey level (default: median grey); "random"
    draws its level from `rng` (`random_focus_plane`)."""
    if plane == "fore":
        return grey.astype(np.float32, copy=True)
    if plane == "back":
        return (255.0 - grey).astype(np.float32)
    if plane == "mid":
        return _distance_plane(grey, float(np.median(grey)) if mid is None else float(mid))
    if plane == "random":
        if rng is None:
            raise ValueError("the random focal plane needs a random generator")
        return random_focus_plane(grey, rng)
    raise UserError(f"plane: unknown focal plane '{plane}' (valid: {', '.join(PLANES)})")


def binary_mask(plane_map: np.ndarray, threshold: float = 60) -> np.ndarray:
    """uint8 (H,W): 0 where plane < threshold (in focus, black), else 255."""
    return np.where(plane_map < threshold, 0, 255).astype(np.uint8)


def patch_mask(plane_map: np.ndarray, thresholds: tuple[float, float] = (60, 150)) -> np.ndarray:
    """uint8 (H,W) three levels: 0 in focus (plane < t0), 128 partial blur (< t1), 255 full blur."""
    t0, t1 = thresholds
    if t0 > t1:
        raise UserError(f"thresholds: {thresholds} must be increasing")
    return np.select([plane_map < t0, plane_map < t1], [0, 128], 255).astype(np.uint8)


def check_patch_split(split: Sequence[float] | None, key: str, mask_kind: str, kind_key: str) -> None:
    """UserError naming `key` unless `split` is None or, for patch masks (`mask_kind`, named `kind_key`), [lo, hi]
    with 0 < lo <= hi < 255: the plane levels between which training draws the line from partial to full blur of a
    patch mask (`patch_mask` draws it at 150)."""
    if split is None:
        return
    if len(split) != 2 or not 0 < split[0] <= split[1] < 255:
        raise UserError(f"{key}={list(split)}: must be [lo, hi] with 0 < lo <= hi < 255")
    if mask_kind != "patch":
        raise UserError(f"{key}: splits 3-level patch masks; {kind_key} is {mask_kind}")


def depth_weight(plane_map: np.ndarray) -> np.ndarray:
    """float32 (H,W) 0..1, 1 = in focus: 1 - plane/255."""
    return np.clip(1.0 - plane_map / 255.0, 0.0, 1.0).astype(np.float32)


def focus_band(near: np.ndarray, in_focus: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """(lo, hi): the 1st..99th percentile of `near` over the in-focus (and valid) pixels, the range the renderer
    keeps sharp."""
    selected = in_focus if valid is None else in_focus & valid
    if not selected.any():
        raise UserError("in_focus: the focus mask marks no pixel with valid depth")
    return _percentile_range(near, selected)


def random_focus_plane(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plane map focused at a grey level drawn uniformly from 0..255: |grey - g0| rescaled (augmentation)."""
    return _distance_plane(grey, float(rng.uniform(0.0, 255.0)))


# Foreground subject (the `render --plane fore` focus): what a phone's portrait mode focuses on
_SUBJECT_BINS = 32  # nearness histogram bins over the 1st..99th percentile range
_SUBJECT_GAP = 0.005  # a bin with less than this share of the centre weight separates two depth clusters
_SUBJECT_MIN_SHARE = 0.03  # a subject holds at least this share of the centre weight
_SUBJECT_SIGMA = 0.15  # centre weight: Gaussian of this many frame sides


def _clusters(hist: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) bin of each run of bins at or above _SUBJECT_GAP, far to near."""
    runs: list[tuple[int, int]] = []
    for i in np.flatnonzero(hist >= _SUBJECT_GAP):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], int(i))
        else:
            runs.append((int(i), int(i)))
    return runs


def foreground_subject(near: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """bool (H,W): the foreground subject.

    The paper's foreground plane is simply the nearest depth, which in a portrait is often clutter in front of the
    subject (branches, a railing, a table edge at the frame border). A camera focuses on the subject: here the
    nearest depth cluster (a run of the nearness histogram between empty bins) that holds at least 3 % of the
    frame, counted with a Gaussian weight centred on the frame, so that clutter at the borders counts little; of
    that cluster, the depths around its peak (bins above a quarter of the peak's height), and of those pixels the
    connected regions with at least a tenth of the largest one's centre weight.
    near (H,W): larger = nearer (`nearness`); valid (H,W) bool."""
    if not valid.any():
        raise UserError("depth: no valid depth pixel")
    h, w = near.shape
    ys, xs = (np.arange(h) + 0.5) / h - 0.5, (np.arange(w) + 0.5) / w - 0.5
    weight = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * _SUBJECT_SIGMA**2)) * valid
    level = np.minimum(
        (_normalise(near, *_percentile_range(near, valid)) * _SUBJECT_BINS).astype(int), _SUBJECT_BINS - 1
    )
    hist = np.bincount(level.ravel(), weights=weight.ravel(), minlength=_SUBJECT_BINS) / weight.sum()
    # the shares of the clusters sum to at least 1 - 32 * _SUBJECT_GAP, so one of them always qualifies
    first, last = [(a, b) for a, b in _clusters(hist) if hist[a : b + 1].sum() >= _SUBJECT_MIN_SHARE][-1]
    top = first + int(np.argmax(hist[first : last + 1]))  # the cluster's peak and its bins above a quarter of it
    lo = hi = top
    while lo > first and hist[lo - 1] >= hist[top] / 4:
        lo -= 1
    while hi < last and hist[hi + 1] >= hist[top] / 4:
        hi += 1
    labels, count = ndimage.label((level >= lo) & (level <= hi) & valid)
    region_weight = ndimage.sum(weight, labels, np.arange(1, count + 1))
    keep = np.concatenate([[False], region_weight >= 0.1 * region_weight.max()])
    return keep[labels]


@dataclass
class SampleFilter:
    """Rejects samples whose in-focus area (mask == 0) is empty, too small or too large, or whose depth is
    mostly unmeasured. Fractions are of all pixels."""

    min_focus: float = 0.02
    max_focus: float = 0.60
    max_invalid: float = 0.5

    def __post_init__(self) -> None:
        for key in ("min_focus", "max_focus", "max_invalid"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserError(f"{key}: must be a fraction in 0..1, got {getattr(self, key)}")
        if self.min_focus > self.max_focus:
            raise UserError(f"min_focus: {self.min_focus} is above max_focus {self.max_focus}")

    def reject_reason(self, mask_u8: np.ndarray, valid: np.ndarray) -> str | None:
        """One of REJECT_REASONS, or None to keep the sample. mask_u8: 0 = in focus (binary or patch mask)."""
        if 1.0 - valid.mean() > self.max_invalid:
            return "invalid_depth"
        focus = float(np.mean(mask_u8 == 0))
        if focus == 0.0:
            return "no_focus"
        if focus < self.min_focus:
            return "focus_too_small"
        if focus > self.max_focus:
            return "mostly_in_focus"
        return None
