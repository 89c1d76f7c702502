"""`defocus-lit sweep SWEEP.yaml`: a hyperparameter sweep from one W&B sweep file, run by W&B when it is online
and offline by Optuna (`defocus_lit.sweeps.run_sweep`)."""

from __future__ import annotations

import argparse

from defocus_lit.sweeps import BACKENDS, DEFAULT_TRIALS, run_sweep


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep file in W&B format, e.g. experiments/sweeps/lr_lambda.yaml")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="default: wandb when W&B is online (WANDB_API_KEY or `wandb login`), else optuna",
    )
    parser.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="trials to finish (completed or pruned, earlier runs of the study included); "
        f"default: the file's run_cap, else the whole grid, else {DEFAULT_TRIALS}",
    )
    parser.add_argument(
        "--study-dir", metavar="DIR", help="study folder: runs, study.db, best.json (default outputs/sweeps/SWEEP_NAME)"
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="optuna only: study storage shared by several workers, e.g. "
        "postgresql://user@host/db (default sqlite:///DIR/study.db)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="fixed overrides for every trial, e.g. trainer.max_epochs=1"
    )


def run(args: argparse.Namespace) -> int:
    result = run_sweep(args.sweep, args.backend, args.trials, args.study_dir, args.storage, args.overrides)
    report = result.report()
    if report:
        print(report)
    return 0
