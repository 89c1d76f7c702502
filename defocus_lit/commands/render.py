"""`defocus-lit render`: defocus one photo from its depth map with the lens-blur renderer.

The in-focus region comes from one of: a focal plane of the depth (`--plane`), a mask drawn by the user
(`--mask`, black = in focus) or a focus distance in metres (`--focus-depth`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defocus_lit.data import planes
from defocus_lit.data.samples import frame_maps
from defocus_lit.errors import UserError
from defocus_lit.io import read_gray, read_mask_grey, read_rgb, warn_if_all_in_focus, write_rgb
from defocus_lit.models.inference import select_device
from defocus_lit.render import BLUR_MODELS, RenderSettings, render_uint8

_DEFAULTS = RenderSettings()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="the photo (PNG/JPEG)")
    parser.add_argument(
        "--depth",
        required=True,
        help="its depth map: 16-bit PNG, or an 8-bit image (first channel); 0 = no measurement",
    )
    parser.add_argument(
        "--depth-kind",
        choices=("depth", "disparity"),
        default="depth",
        help="depth: metric depth (metres = value * --depth-scale); disparity: relative inverse "
        "depth, larger = nearer (default: depth)",
    )
    parser.add_argument(
        "--depth-scale",
        type=float,
        default=0.001,
        help="metres per depth unit for --depth-kind depth (default: 0.001, millimetre PNGs)",
    )
    focus = parser.add_mutually_exclusive_group(required=True)
    focus.add_argument("--focus-depth", type=float, metavar="METRES", help="focus at this distance (depth kind only)")
    focus.add_argument("--mask", metavar="M.png", help="in-focus mask, the image's size: black (< 128) = in focus")
    focus.add_argument(
        "--plane",
        choices=planes.PAPER_PLANES,
        help="focus on the foreground subject (the nearest depth cluster with a fair share of the "
        "frame's centre), the midground or the background",
    )
    parser.add_argument(
        "--blur-model",
        choices=BLUR_MODELS,
        default=_DEFAULTS.blur_model,
        help="thin_lens (physical, default) or blur_map (the paper's Photoshop recipe)",
    )
    parser.add_argument(
        "--k",
        type=float,
        default=_DEFAULTS.k,
        metavar="PX",
        help="thin_lens blur in px per unit of nearness outside the in-focus band: 1/metres for "
        f"depth, 0..1 normalised disparity (default: {_DEFAULTS.k:g})",
    )
    parser.add_argument(
        "--max-radius",
        type=float,
        default=_DEFAULTS.max_radius,
        metavar="PX",
        help=f"largest blur radius in px (default: {_DEFAULTS.max_radius:g})",
    )
    parser.add_argument(
        "--layers", type=int, default=_DEFAULTS.layers, help=f"depth layers (default: {_DEFAULTS.layers})"
    )
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--out", required=True, metavar="O.png", help="output image (.png, .jpg)")


@dataclass
class _Focus:
    in_focus: np.ndarray | None  # bool (H,W), thin-lens band from these pixels
    band: tuple[float, float] | None  # or the band itself, in nearness units
    plane_map: np.ndarray | None  # 0..255, for blur_map


def _size(arr: np.ndarray) -> str:
    return f"{arr.shape[1]}x{arr.shape[0]}"


def _read_depth(args: argparse.Namespace, image: np.ndarray) -> np.ndarray:
    raw = read_gray(args.depth)
    if raw.shape != image.shape[:2]:
        raise UserError(f"{args.depth}: depth is {_size(raw)} but the image {args.image} is {_size(image)}")
    depth = raw.astype(np.float32)
    if args.depth_kind == "depth":
        if not args.depth_scale > 0:
            raise UserError(f"--depth-scale: must be > 0, got {args.depth_scale}")
        depth *= args.depth_scale
    if not planes.valid_depth(depth).any():
        raise UserError(f"{args.depth}: no valid depth pixel (all values are 0)")
    return depth


def _focus_from_plane(args: argparse.Namespace, depth: np.ndarray, grey: np.ndarray) -> _Focus:
    """ "fore" is the foreground subject (`planes.foreground_subject`), "mid" and "back" the paper's planes."""
    if args.plane == "fore":
        return _focus_on_region(
            planes.foreground_subject(planes.nearness(depth, args.depth_kind), planes.valid_depth(depth)), grey
        )
    plane_map = planes.focal_plane(grey, args.plane)
    return _Focus(planes.binary_mask(plane_map) == 0, None, plane_map)


def _focus_on_region(in_focus: np.ndarray, grey: np.ndarray) -> _Focus:
    """Thin lens: the band of the region's depths; blur_map: blur grows with the grey-depth distance from the
    region's median grey."""
    plane_map = planes.focal_plane(grey, "mid", mid=float(np.median(grey[in_focus])))
    return _Focus(in_focus, None, plane_map)


def _focus_from_mask(args: argparse.Namespace, image: np.ndarray, depth: np.ndarray, grey: np.ndarray) -> _Focus:
    mask = read_mask_grey(args.mask)  # any mode: 1-bit, palette, 16-bit, alpha ...
    if mask.shape != image.shape[:2]:
        raise UserError(f"{args.mask}: mask is {_size(mask)} but the image {args.image} is {_size(image)}")
    in_focus = mask < 128
    if not (in_focus & planes.valid_depth(depth)).any():
        raise UserError(f"{args.mask}: no black (in-focus) pixel with a valid depth")
    warn_if_all_in_focus(in_focus, args.mask)
    return _focus_on_region(in_focus, grey)


def _focus_from_distance(args: argparse.Namespace, depth: np.ndarray, grey: np.ndarray) -> _Focus:
    if args.depth_kind != "depth":
        raise UserError(
            "--focus-depth: needs --depth-kind depth (a disparity map has no metres); use --plane or --mask instead"
        )
    if not args.focus_depth > 0:
        raise UserError(f"--focus-depth: must be > 0 metres, got {args.focus_depth}")
    valid = planes.valid_depth(depth)
    order = np.argsort(depth[valid], kind="stable")
    focus_grey = float(np.interp(args.focus_depth, depth[valid][order], grey[valid][order]))
    plane_map = planes.focal_plane(grey, "mid", mid=focus_grey)
    return _Focus(None, (1.0 / args.focus_depth, 1.0 / args.focus_depth), plane_map)


def run(args: argparse.Namespace) -> int:
    settings = RenderSettings(args.blur_model, args.k, args.max_radius, args.layers)
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg"):  # fail before the render, not after
        raise UserError(f"{args.out}: output must end in .png, .jpg or .jpeg")
    device = select_device(args.device)
    image = read_rgb(args.image)
    depth = _read_depth(args, image)
    grey = planes.depth_grey(depth, args.depth_kind)
    if args.plane is not None:
        focus = _focus_from_plane(args, depth, grey)
    elif args.mask is not None:
        focus = _focus_from_mask(args, image, depth, grey)
    else:
        focus = _focus_from_distance(args, depth, grey)
    near, radius = frame_maps(
        depth, args.depth_kind, settings, in_focus=focus.in_focus, plane_map=focus.plane_map, band=focus.band
    )
    out = render_uint8(image[None], near[None], radius[None], settings.layers, str(device))[0]
    write_rgb(args.out, out)
    print(
        f"wrote {args.out} ({_size(out)}, {settings.blur_model}, blur radius {radius.min():.1f}-{radius.max():.1f} px)"
    )
    return 0
