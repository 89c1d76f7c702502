"""The `defocus-lit` subcommands, one module each: `configure_parser(parser)` declares the options and
`run(args) -> int` does the work, raising `UserError` for bad input (printed by `defocus_lit.cli`)."""

import argparse

from defocus_lit.models.inference import DEVICES, MAX_SIDE


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """--device, --max-side and --strength, which mean the same in every command that runs a model (predict,
    evaluate, demo)."""
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto = CUDA when present, else CPU")
    parser.add_argument(
        "--max-side",
        type=int,
        default=MAX_SIDE,
        metavar="PX",
        help="the long side at which blur radii are as trained: a larger photo gets them scaled up and is blurred "
        "at full resolution, its blur decided by the generator on a copy at this size or at the training frames' "
        f"smaller one (default: {MAX_SIDE}; 0 = generator at full resolution)",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=1.0,
        metavar="S",
        help="blur amount, as if the aperture were S times wider: every blur radius times S, at most the "
        "training's largest (render.max_radius); 1 = the trained look (default), 0.5 = half the blur; other than 1 "
        "needs a blur-head checkpoint (evaluate --manifest: targets rendered with k times S; demo: the slider's "
        "start)",
    )
