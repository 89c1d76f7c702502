"""One frame -> its training samples: focal planes, masks, sample filter, blur radius and rendered targets.

The single per-frame pipeline, used by the dataset writer (`data build`), by `evaluate` on a manifest (targets
rendered on the fly) and by the `render` command, so a sample means the same thing wherever it is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from defocus_lit.data.planes import (
    PLANES,
    SampleFilter,
    binary_mask,
    depth_grey,
    focal_plane,
    focus_band,
    nearness,
    valid_depth,
)
from defocus_lit.render import RenderSettings, blur_radius_blur_map, blur_radius_thin_lens, render_defocus, uint8_images

# ----------------------------------------------------------------------------------------------- frame sizes


def fit_frame(image: np.ndarray, depth: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize (short side first, keeping the aspect) and center-crop a frame to `size` (H,W).

    The image is resampled with Lanczos; depth with nearest neighbour so that no depth is invented across
    object edges and 0 (no measurement) stays 0."""
    h, w = depth.shape
    th, tw = size
    if (h, w) == (th, tw):
        return image, depth
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        image = np.array(Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS))
        depth = np.array(Image.fromarray(depth.astype(np.float32)).resize((nw, nh), Image.Resampling.NEAREST))
    top, left = (nh - th) // 2, (nw - tw) // 2
    return image[top : top + th, left : left + tw], depth[top : top + th, left : left + tw]


def shrink(image: np.ndarray, depth: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a frame so its long side is at most `max_side` px, keeping the aspect (as `fit_frame`)."""
    h, w = depth.shape
    scale = max_side / max(h, w)
    if scale < 1:
        image, depth = fit_frame(image, depth, (max(1, round(h * scale)), max(1, round(w * scale))))
    return image, depth


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """float32 (H,W) with every unmeasured pixel (non-finite or <= 0) set to 0."""
    return np.where(valid_depth(depth), depth, 0).astype(np.float32)


# ----------------------------------------------------------------------------------------------- blur radius


def blur_radius(
    near: np.ndarray,
    settings: RenderSettings,
    *,
    in_focus: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    plane_maps: np.ndarray | None = None,
    bands: Sequence[tuple[float, float]] | None = None,
    device: str = "cpu",
) -> Tensor:
    """(P,1,H,W) float32 blur radius in px for P focusings of one frame, as the renderer renders them.

    near (H,W) nearness (larger = nearer). thin_lens: each focusing's in-focus band is the nearness range of its
    valid `in_focus` pixels (P,H,W) bool, or given as `bands` [(lo, hi)] in nearness units. blur_map: from
    `plane_maps` (P,H,W) 0..255."""
    if settings.blur_model == "blur_map":
        if plane_maps is None:
            raise ValueError("blur_model 'blur_map' needs plane_maps")
        plane = torch.from_numpy(np.asarray(plane_maps, dtype=np.float32))[:, None].to(device)
        return blur_radius_blur_map(plane, settings.max_radius)
    if bands is None:
        if in_focus is None:
            raise ValueError("blur_model 'thin_lens' needs in_focus or bands")
        bands = [focus_band(near, f, valid) for f in in_focus]
    near_t = torch.from_numpy(near)[None, None].to(device).expand(len(bands), 1, -1, -1)
    band_t = torch.tensor(bands, dtype=torch.float32, device=device)
    return blur_radius_thin_lens(near_t, band_t, settings.k, settings.max_radius)


def mean_radius(radius: Tensor, blurred: np.ndarray) -> np.ndarray:
    """(P,) float32: the mean of `radius` (P,1,H,W) over the `blurred` (P,H,W) pixels (0 where there is none);
    what a dataset records and the mask_blur baseline uses."""
    weight = torch.from_numpy(np.ascontiguousarray(blurred))[:, None].to(radius.device)
    return ((radius * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp(min=1)).float().cpu().numpy()


def frame_maps(
    depth: np.ndarray,
    kind: str,
    settings: RenderSettings,
    *,
    in_focus: np.ndarray | None = None,
    plane_map: np.ndarray | None = None,
    band: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(nearness, radius), both (H,W) float32, for one focusing of a frame (see `blur_radius`; `in_focus` and
    `plane_map` (H,W))."""
    near = nearness(depth, kind)
    radius = blur_radius(
        near,
        settings,
        in_focus=None if in_focus is None else in_focus[None],
        valid=valid_depth(depth),
        plane_maps=None if plane_map is None else plane_map[None],
        bands=None if band is None else [band],
    )
    return near, radius[0, 0].cpu().numpy()


# ----------------------------------------------------------------------------------------------- samples


@dataclass
class FrameSamples:
    """The kept focal planes of one frame, rendered; arrays have a leading sample axis P."""

    plane: np.ndarray  # (P,) uint8, index into PLANES
    plane_map: np.ndarray  # (P,H,W) float32 0..255, 0 = in focus
    mask: np.ndarray  # (P,H,W) uint8 binary mask, 0 = in focus, 255 = blurred
    target: np.ndarray  # (P,H,W,3) uint8 sRGB
    mean_radius: np.ndarray  # (P,) float32 px over the blurred pixels
    radius: np.ndarray  # (P,H,W) float32 px, the blur radius the renderer used per pixel

    @classmethod
    def concat(cls, parts: Sequence[FrameSamples]) -> FrameSamples:
        """One FrameSamples holding the samples of `parts` in order."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def as_disparity(depth: np.ndarray) -> np.ndarray:
    """float32 (H,W): metric depth (0 = unmeasured) read as relative disparity 1/depth, what a monocular network
    gives; unmeasured pixels stay 0."""
    valid = valid_depth(depth)
    return np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0).astype(np.float32)


def frame_samples(
    image: np.ndarray,
    depth: np.ndarray,
    kind: str,
    planes: Sequence[str],
    settings: RenderSettings,
    sample_filter: SampleFilter,
    device: str = "cpu",
    rng: np.random.Generator | None = None,
) -> tuple[FrameSamples | None, list[str]]:
    """The samples of a frame's focal `planes` that pass the filter, all rendered in one batched renderer call
    (None when every plane was rejected), and the reasons the other planes were rejected. `rng` draws the "random"
    plane's focus.

    image (H,W,3) uint8; depth (H,W) as `clean_depth` returns it (0 = unmeasured)."""
    valid = valid_depth(depth)
    grey = depth_grey(depth, kind)
    kept, rejected = [], []
    for name in planes:
        plane_map = focal_plane(grey, name, rng=rng)
        mask = binary_mask(plane_map)
        reason = sample_filter.reject_reason(mask, valid)
        if reason is None:
            kept.append((PLANES.index(name), plane_map, mask))
        else:
            rejected.append(reason)
    if not kept:
        return None, rejected
    plane_maps = np.stack([k[1] for k in kept])
    masks = np.stack([k[2] for k in kept])
    near = nearness(depth, kind)
    radius = blur_radius(near, settings, in_focus=masks == 0, valid=valid, plane_maps=plane_maps, device=device)
    p = len(kept)
    near_t = torch.from_numpy(near)[None, None].to(device).expand(p, 1, -1, -1)
    image_t = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float().div(255)
    target = uint8_images(render_defocus(image_t.expand(p, -1, -1, -1), radius, near_t, layers=settings.layers))
    plane = np.array([k[0] for k in kept], np.uint8)
    radius_px = radius[:, 0].cpu().numpy()
    return FrameSamples(plane, plane_maps, masks, target, mean_radius(radius, masks > 0), radius_px), rejected
