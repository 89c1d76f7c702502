"""`defocus-lit mask`: select the subject of a photo from a box around it and/or strokes, and write the mask file
`predict` reads (grey PNG of the photo's size: 0 = subject, kept sharp; 255 = background, blurred).

The selection snaps to the subject's outline (`defocus_lit.select`: GrabCut on a working copy, the edge refined
at full resolution). Strokes file: an image of the photo's size, black = surely subject, white = surely background,
mid grey or transparent = unknown; strokes always win.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from defocus_lit.errors import UserError
from defocus_lit.io import read_rgb, write_rgb
from defocus_lit.select import parse_box, read_strokes, select_subject


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
    if args.box is None and args.strokes is None:
        raise UserError("give --box X0,Y0,X1,Y1, --strokes S.png or both")
    if Path(args.out).suffix.lower() != ".png":  # a mask must keep exact values: no JPEG
        raise UserError(f"{args.out}: the mask must be a .png")
    image = read_rgb(args.image)
    height, width = image.shape[:2]
    box = None if args.box is None else parse_box(args.box, width, height)
    strokes = None if args.strokes is None else read_strokes(args.strokes, (height, width))
    subject = select_subject(image, box, strokes)
    if not subject.any():
        raise UserError(f"{args.image}: nothing was selected; draw the box closer around the subject or add strokes")
    write_rgb(args.out, np.where(subject, 0, 255).astype(np.uint8))
    print(f"wrote {args.out} ({width}x{height}, subject {subject.mean():.1%} of the photo)")
    return 0
