"""The `defocus-lit` subcommands, one module each: `configure_parser(parser)` declares the options and
`run(args) -> int` does the work, raising `UserError` for bad input (printed by `defocus_lit.cli`)."""

import argparse

from defocus_lit.models.inference import DEVICES, MAX_SIDE


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """--device and --max-side, which mean the same in every command that runs a model (predict, evaluate, demo)."""
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


def add_amount_options(parser: argparse.ArgumentParser) -> None:
    """--amount and --strength, which mean the same in predict and evaluate (the demo has its slider)."""
    parser.add_argument(
        "--amount",
        type=float,
        metavar="A",
        help="how much blur: the mean blur radius out of focus in percent of the photo's long side (3 = 7.7 px at "
        "256 px, 30 px at 1000 px), drawn by a checkpoint trained with the amount input; default: the amount the "
        "model guesses for the photo and mask",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=1.0,
        metavar="S",
        help="multiplies the amount of blur, given (--amount) or guessed: 2 = twice, 0.5 = half (a guessed amount is "
        "clamped at the training's largest radius, render.max_radius); 1 = as given or guessed (default); other "
        "than 1 needs a blur-head checkpoint (evaluate --manifest: targets rendered with k times S)",
    )
