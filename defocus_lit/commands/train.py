"""`defocus-lit train EXP [key=value ...]`: the thin entry point around `defocus_lit.training.run_training`."""

from __future__ import annotations

import argparse

from defocus_lit.config import experiments_dir, load_experiment, split_experiment
from defocus_lit.slurm import is_rank_zero
from defocus_lit.training import SUMMARY_KEYS, run_training


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "experiment",
        help="experiment name in experiments/ (e.g. patch_mask) or a YAML path; "
        "`experiment=NAME` anywhere among the words works too (as W&B sweep agents pass it)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. optim.lr=1e-4 trainer.max_epochs=5 cpu_preset=false",
    )


def run(args: argparse.Namespace) -> int:
    experiment, overrides = split_experiment([args.experiment, *args.overrides])
    cfg = load_experiment(experiment, overrides)
    if cfg.cpu_preset and not any(w.startswith("cpu_preset=") for w in overrides) and is_rank_zero():
        print(
            f"No GPU found: applying the CPU preset {experiments_dir() / 'presets' / 'cpu.yaml'} "
            "(small network, short run); add cpu_preset=false for the full recipe."
        )
    result = run_training(cfg)
    if not is_rank_zero():  # every DDP process under srun runs this command; one of them reports
        return 0
    if result.run_dir is None:
        print("fast_dev_run: training and validation ran on one batch each; nothing was written")
        return 0
    print(f"checkpoints: {result.best_ckpt} (best val/psnr), {result.last_ckpt} (last)")
    print(f"metrics:     {result.metrics_csv}, W&B run in {result.run_dir / 'wandb'}")
    print(f"images:      {result.run_dir / 'images'}")
    print("summary: " + " ".join(f"{k}={result.metrics[k]:.4g}" for k in SUMMARY_KEYS if k in result.metrics))
    return 0
