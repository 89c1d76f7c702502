"""`defocus-lit evaluate`: score a checkpoint and the baselines on held-out data and write a report
(`defocus_lit.evaluation`, where the report and its methods are described)."""

from __future__ import annotations

import argparse
from pathlib import Path

from defocus_lit.baselines import NAMES as BASELINE_NAMES
from defocus_lit.commands import add_amount_options, add_inference_options
from defocus_lit.evaluation import FRAME_SIDE, amount_line, evaluate_checkpoint, mean_table
from defocus_lit.render import BLUR_MODELS


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", help="checkpoint from `defocus-lit train`; leave out to score --baseline alone")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="HDF5 dataset from `defocus-lit data build` (test split, else val)")
    source.add_argument("--manifest", help="CSV image,depth[,kind,scale]: targets rendered on the fly")
    parser.add_argument("--out", required=True, help="report folder (replaced if it holds an earlier report)")
    parser.add_argument(
        "--baseline",
        choices=BASELINE_NAMES,
        help="score only this baseline (with --ckpt: the model and this baseline)",
    )
    parser.add_argument("--limit", type=int, help="score only the first N samples")
    add_inference_options(parser)
    add_amount_options(parser)
    render = parser.add_argument_group("manifest frames and renderer overrides (--manifest only)")
    render.add_argument(
        "--frame-side",
        type=int,
        default=FRAME_SIDE,
        metavar="PX",
        help=f"resize frames whose long side is larger to this many px (default {FRAME_SIDE})",
    )
    render.add_argument("--blur-model", choices=BLUR_MODELS)
    render.add_argument("--k", type=float, help="thin-lens blur in px per unit of inverse depth")
    render.add_argument("--max-radius", type=float, help="largest blur radius in px")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    options = {key: getattr(args, key) for key in ("data", "manifest", "baseline", "limit", "device", "max_side")}
    options |= {key: getattr(args, key) for key in ("amount", "strength", "frame_side", "blur_model", "k")}
    report = evaluate_checkpoint(args.ckpt, out=out, max_radius=args.max_radius, **options)
    print(mean_table(report["mean"]))
    if "blur_amount" in report:
        print(amount_line(report["blur_amount"]))
    print(f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(report['samples'])} sample images")
    return 0
