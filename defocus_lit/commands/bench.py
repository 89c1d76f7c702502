"""`defocus-lit bench [--json F]`: the speed and memory figures the issues set targets for
(`defocus_lit.benchmarks.run_benchmarks`), printed as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from defocus_lit.benchmarks import EXPERIMENTS, PARTS, STEPS, run_benchmarks


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="F", help="also write the figures as JSON to F")
    parser.add_argument("--only", nargs="+", choices=sorted(PARTS), help="run only these parts")
    parser.add_argument("--steps", type=int, default=STEPS, help="timed training steps per architecture")
    parser.add_argument(
        "--experiments", nargs="+", choices=EXPERIMENTS, default=EXPERIMENTS, help="experiments the train part times"
    )


def run(args: argparse.Namespace) -> int:
    figures = run_benchmarks(args.only, steps=args.steps, experiments=args.experiments)
    text = json.dumps(figures, indent=2, default=float)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0
