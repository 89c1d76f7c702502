"""`defocus-lit render`: defocus one photo from its depth map with the lens-blur renderer
(`defocus_lit.data.photo.render_photo`), focused on a plane of the depth, a drawn mask or a distance."""

from __future__ import annotations

import argparse
from pathlib import Path

from defocus_lit.data import planes
from defocus_lit.data.photo import render_photo
from defocus_lit.errors import UserError
from defocus_lit.io import write_rgb
from defocus_lit.models.inference import select_device
from defocus_lit.render import BLUR_MODELS, RenderSettings

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


def run(args: argparse.Namespace) -> int:
    settings = RenderSettings(args.blur_model, args.k, args.max_radius, args.layers)
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg"):  # fail before the render, not after
        raise UserError(f"{args.out}: output must end in .png, .jpg or .jpeg")
    device = select_device(args.device)
    photo = render_photo(
        args.image,
        args.depth,
        plane=args.plane,
        mask=args.mask,
        focus_depth=args.focus_depth,
        depth_kind=args.depth_kind,
        depth_scale=args.depth_scale,
        settings=settings,
        device=str(device),
    )
    write_rgb(args.out, photo.image)
    h, w = photo.image.shape[:2]
    radius = photo.radius
    print(f"wrote {args.out} ({w}x{h}, {settings.blur_model}, blur radius {radius.min():.1f}-{radius.max():.1f} px)")
    return 0
