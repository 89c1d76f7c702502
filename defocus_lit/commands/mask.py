"""`defocus-lit mask`: select the subject of a photo from a box around it and/or strokes, and write the mask file
`predict` reads (grey PNG of the photo's size: 0 = subject, kept sharp; 255 = background, blurred).

The selection snaps to the subject's outline (`defocus_lit.select`: GrabCut on a working copy, the edge refined
at full resolution). Strokes file: an image of the photo's size, black = surely subject, white = surely background,
mid grey or transparent = unknown; strokes always win.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from defocus_lit.api import subject_mask
from defocus_lit.errors import UserError
from defocus_lit.io import write_rgb


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="the photo (PNG/JPEG)")
    parser.add_argument(
        "--box",
        metavar="X0,Y0,X1,Y1",
        help="a box around the subject: corners in pixels of the photo (0,0 = top left; x1,y1 exclusive)",
    )
    parser.add_argument(
        "--strokes",
        metavar="S.png",
        help="strokes of the photo's size: black = surely subject, white = surely background, mid grey or "
        "transparent = unknown",
    )
    parser.add_argument("--out", required=True, metavar="M.png", help="the mask to write (.png)")


def run(args: argparse.Namespace) -> int:
    if Path(args.out).suffix.lower() != ".png":  # a mask must keep exact values: no JPEG
        raise UserError(f"{args.out}: the mask must be a .png")
    mask = subject_mask(args.image, args.box, args.strokes)
    write_rgb(args.out, mask)
    height, width = mask.shape
    print(f"wrote {args.out} ({width}x{height}, subject {(mask == 0).mean():.1%} of the photo)")
    return 0
