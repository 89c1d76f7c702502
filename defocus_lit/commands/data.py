"""`defocus-lit data build|info`: build the HDF5 training set from RGB-D images, or describe one."""

from __future__ import annotations

import argparse
import json

from defocus_lit.data.build import build_dataset, summary_line
from defocus_lit.data.hdf5 import info_text, read_info
from defocus_lit.data.planes import PAPER_PLANES, PLANES
from defocus_lit.data.sources import SOURCES, open_source
from defocus_lit.errors import UserError
from defocus_lit.models.inference import DEVICES, select_device
from defocus_lit.render import BLUR_MODELS, RenderSettings


def _size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 256x256, not '{text}'") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, not '{text}'")
    return h, w


def _planes(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in names if p not in PLANES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown plane(s) {bad or text!r}; valid: {','.join(PLANES)}")
    return names


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{build,info}")
    build = sub.add_parser(
        "build",
        help="build an HDF5 training set from RGB-D frames",
        description="Render fore/mid/back focal-plane targets for every frame of an RGB-D source "
        "and write them with their masks to one HDF5 file.",
    )
    build.add_argument("--source", required=True, help=f"one of {', '.join(SOURCES)}")
    build.add_argument(
        "--path",
        help="nyu_depth_v2_labeled.mat (nyu-mat), a CSV image,depth[,kind,scale] (manifest) or a YAML list of "
        "sources with weights (mix: `sources: [{source: synthetic, num: 240}, {source: manifest, path: "
        "photos.csv, weight: 4}]`)",
    )
    build.add_argument("--out", required=True, help="output .h5 file (written atomically)")
    build.add_argument("--num", type=int, help="frames to use (synthetic: to make, default 100; files: the first N)")
    build.add_argument(
        "--size",
        type=_size,
        help="output frame size HxW (default: the frames' size if all equal, "
        "else and for a mix 256x256 after resizing the short side and center-cropping)",
    )
    build.add_argument(
        "--seed",
        type=int,
        default=0,
        help="synthetic scenes (mix: per source in its file) and the train/val/test split",
    )
    build.add_argument(
        "--planes",
        type=_planes,
        default=PAPER_PLANES,
        help="comma-separated focal planes (default fore,mid,back; add random for a plane focused at a random depth "
        "per frame, training augmentation that validation and test leave out)",
    )
    build.add_argument("--splits", help="nyu-mat: the official splits.mat (train frames -> train/val, test -> test)")
    build.add_argument("--blur-model", choices=BLUR_MODELS, help="renderer blur model (default thin_lens)")
    build.add_argument("--k", type=float, help="thin_lens: px of blur radius per unit of inverse depth")
    build.add_argument("--max-radius", type=float, help="largest blur radius in px")
    build.add_argument("--layers", type=int, help="depth layers of the renderer")
    build.add_argument(
        "--val-frac",
        type=float,
        default=0.1,
        help="fraction of frames for validation (default 0.1; of the official train frames with --splits)",
    )
    build.add_argument(
        "--test-frac", type=float, default=0.1, help="fraction of frames for test (default 0.1; ignored with --splits)"
    )
    build.add_argument("--device", choices=DEVICES, default="auto", help="renderer device")
    build.add_argument(
        "--workers",
        type=int,
        help="processes that read and render frames (default: one per core on CPU, 0 on CUDA; 0 = in this process)",
    )
    build.add_argument("--quiet", action="store_true", help="no progress bar")

    info = sub.add_parser(
        "info",
        help="describe a built HDF5 dataset",
        description="Sizes, splits, planes, source, renderer settings and filter counts of a dataset.",
    )
    info.add_argument("path", help="a .h5 file from `defocus-lit data build`")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")


def _run_build(args: argparse.Namespace) -> None:
    if min(args.val_frac, args.test_frac) < 0 or args.val_frac + args.test_frac >= 1:
        raise UserError(
            f"--val-frac/--test-frac: {args.val_frac} and {args.test_frac} must be >= 0 and leave "
            "frames for training (sum < 1)"
        )
    split = (1 - args.val_frac - args.test_frac, args.val_frac, args.test_frac)
    given = {"blur_model": args.blur_model, "k": args.k, "max_radius": args.max_radius, "layers": args.layers}
    settings = RenderSettings(**{k: v for k, v in given.items() if v is not None})
    device = str(select_device(args.device))
    source = open_source(args.source, args.path, num=args.num, size=args.size, seed=args.seed, splits=args.splits)
    summary = build_dataset(
        source,
        args.out,
        planes=args.planes,
        settings=settings,
        split=split,
        seed=args.seed,
        progress=not args.quiet,
        size=args.size,
        device=device,
        workers=args.workers,
    )
    print(summary_line(summary))


def _run_info(args: argparse.Namespace) -> None:
    info = read_info(args.path)
    print(json.dumps(info, indent=2) if args.json else info_text(info))


def run(args: argparse.Namespace) -> int:
    if args.action == "build":
        _run_build(args)
    else:
        _run_info(args)
    return 0
