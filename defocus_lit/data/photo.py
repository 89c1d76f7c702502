"""One photo defocused from its depth map with the lens-blur renderer (`defocus-lit render`, `render_photo`).

The in-focus region comes from one of: a focal plane of the depth (`plane`), a mask drawn by the user (`mask`,
black = in focus) or a focus distance in metres (`focus_depth`). The blur radius then comes from `frame_maps`,
as for a training sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from defocus_lit.data import planes
from defocus_lit.data.samples import frame_maps
from defocus_lit.errors import UserError
from defocus_lit.io import read_gray, read_mask_grey, read_rgb, warn_if_all_in_focus
from defocus_lit.render import RenderSettings, render_uint8


class RenderedPhoto(NamedTuple):
    image: np.ndarray  # uint8 (H,W,3), the defocused photo
    radius: np.ndarray  # float32 (H,W), the blur radius in px at each pixel


@dataclass
class _Focus:
    in_focus: np.ndarray | None  # bool (H,W), thin-lens band from these pixels
    band: tuple[float, float] | None  # or the band itself, in nearness units
    plane_map: np.ndarray | None  # 0..255, for blur_map


def _size(arr: np.ndarray) -> str:
    return f"{arr.shape[1]}x{arr.shape[0]}"


def _read_depth(
    path: str | os.PathLike, image: np.ndarray, image_path: str | os.PathLike, kind: str, scale: float
) -> np.ndarray:
    raw = read_gray(path)
    if raw.shape != image.shape[:2]:
        raise UserError(f"{path}: depth is {_size(raw)} but the image {image_path} is {_size(image)}")
    depth = raw.astype(np.float32)
    if kind == "depth":
        if not scale > 0:
            raise UserError(f"--depth-scale: must be > 0, got {scale}")
        depth *= scale
    if not planes.valid_depth(depth).any():
        raise UserError(f"{path}: no valid depth pixel (all values are 0)")
    return depth


def _focus_from_plane(plane: str, depth: np.ndarray, kind: str, grey: np.ndarray) -> _Focus:
    """ "fore" is the foreground subject (`planes.foreground_subject`), "mid" and "back" the paper's planes."""
    if plane == "fore":
        return _focus_on_region(
            planes.foreground_subject(planes.nearness(depth, kind), planes.valid_depth(depth)), grey
        )
    plane_map = planes.focal_plane(grey, plane)
    return _Focus(planes.binary_mask(plane_map) == 0, None, plane_map)


def _focus_on_region(in_focus: np.ndarray, grey: np.ndarray) -> _Focus:
    """Thin lens: the band of the region's depths; blur_map: blur grows with the grey-depth distance from the
    region's median grey."""
    plane_map = planes.focal_plane(grey, "mid", mid=float(np.median(grey[in_focus])))
    return _Focus(in_focus, None, plane_map)


def _focus_from_mask(
    path: str | os.PathLike, image: np.ndarray, image_path: str | os.PathLike, depth: np.ndarray, grey: np.ndarray
) -> _Focus:
    mask = read_mask_grey(path)  # any mode: 1-bit, palette, 16-bit, alpha ...
    if mask.shape != image.shape[:2]:
        raise UserError(f"{path}: mask is {_size(mask)} but the image {image_path} is {_size(image)}")
    in_focus = mask < 128
    if not (in_focus & planes.valid_depth(depth)).any():
        raise UserError(f"{path}: no black (in-focus) pixel with a valid depth")
    warn_if_all_in_focus(in_focus, path)
    return _focus_on_region(in_focus, grey)


def _focus_from_distance(metres: float, depth: np.ndarray, kind: str, grey: np.ndarray) -> _Focus:
    if kind != "depth":
        raise UserError(
            "--focus-depth: needs --depth-kind depth (a disparity map has no metres); use --plane or --mask instead"
        )
    if not metres > 0:
        raise UserError(f"--focus-depth: must be > 0 metres, got {metres}")
    valid = planes.valid_depth(depth)
    order = np.argsort(depth[valid], kind="stable")
    focus_grey = float(np.interp(metres, depth[valid][order], grey[valid][order]))
    plane_map = planes.focal_plane(grey, "mid", mid=focus_grey)
    return _Focus(None, (1.0 / metres, 1.0 / metres), plane_map)


def render_photo(
    image: str | os.PathLike,
    depth: str | os.PathLike,
    *,
    plane: str | None = None,
    mask: str | os.PathLike | None = None,
    focus_depth: float | None = None,
    depth_kind: str = "depth",
    depth_scale: float = 0.001,
    settings: RenderSettings | None = None,
    device: str = "cpu",
) -> RenderedPhoto:
    """Defocus the photo at `image` with its depth map at `depth`, focused by exactly one of `plane` (one of
    `planes.PAPER_PLANES`), `mask` (an image file, black = in focus) or `focus_depth` (metres).

    depth_kind: "depth" (metres = value * depth_scale) or "disparity" (relative inverse depth, larger = nearer);
    a depth of 0 is no measurement. UserError naming the file for bad input."""
    if sum(focus is not None for focus in (plane, mask, focus_depth)) != 1:
        raise UserError("focus: give exactly one of plane, mask or focus_depth")
    settings = settings or RenderSettings()
    photo = read_rgb(image)
    depth_map = _read_depth(depth, photo, image, depth_kind, depth_scale)
    grey = planes.depth_grey(depth_map, depth_kind)
    if plane is not None:
        focus = _focus_from_plane(plane, depth_map, depth_kind, grey)
    elif mask is not None:
        focus = _focus_from_mask(mask, photo, image, depth_map, grey)
    else:
        focus = _focus_from_distance(focus_depth, depth_map, depth_kind, grey)
    near, radius = frame_maps(
        depth_map, depth_kind, settings, in_focus=focus.in_focus, plane_map=focus.plane_map, band=focus.band
    )
    return RenderedPhoto(render_uint8(photo[None], near[None], radius[None], settings.layers, device)[0], radius)
