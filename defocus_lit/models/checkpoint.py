"""Loading a trained generator from a Lightning checkpoint, for predict, evaluate and export."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from defocus_lit.errors import UserError
from defocus_lit.models.defocuser import Defocuser, build_defocuser

CHECKPOINT_KEY = "defocus_lit"  # the training callbacks' state, beside Lightning's own keys
DATAMODULE_KEY = "DefocusDataModule"  # Lightning stores the datamodule's state_dict under its class name


def unreadable(path: str | Path, reason: str) -> UserError:
    """The error for a checkpoint that cannot be read: cut short (a copy that did not finish) or not one."""
    return UserError(f"{path}: not a readable PyTorch checkpoint: truncated or another kind of file ({reason[:100]})")


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise unreadable(path, str(err).splitlines()[0]) from None
    if not isinstance(checkpoint, dict) or "cfg" not in checkpoint.get("hyper_parameters", {}):
        raise UserError(f"{path}: not a defocus_lit checkpoint (no hyper_parameters.cfg)")
    return checkpoint


def load_checkpoint(path: str | Path) -> tuple[Defocuser, DictConfig]:
    """The generator of a `defocus-lit train` checkpoint in eval mode, and the run's config."""
    return defocuser_of(read_checkpoint(path), path)


def extras_of(checkpoint: dict) -> dict:
    """What the training callbacks stored beside the weights: {"baselines", "best", "global_blur"} (each may be
    missing in older checkpoints)."""
    return dict(checkpoint.get(CHECKPOINT_KEY, {}))


def defocuser_of(checkpoint: dict, path: str | Path) -> tuple[Defocuser, DictConfig]:
    """The Defocuser (eval mode, with the long side of its training frames where the checkpoint records it) and
    config of a checkpoint read by `read_checkpoint` from `path`."""
    older = {  # before these options
        "model": {
            "head": "rgb",
            "stack_levels": 6,
            "global_context": False,
            "amount_input": False,
            "exact_amount": False,
            "level_smooth": 0.0,
        },
        "data": {"strength_range": None, "unknown_amount": 0.0, "patch_split": None},
    }
    saved = checkpoint["hyper_parameters"]["cfg"]
    if saved.get("data", {}).get("strength_range") and "amount_input" not in saved.get("model", {}):
        raise UserError(
            f"{path}: its generator was told a blur strength (data.strength_range before the amount input), which "
            "this version replaced by the amount; train it again"
        )
    cfg = OmegaConf.merge(OmegaConf.create(older), saved)
    model = build_defocuser(cfg)
    prefix = "defocuser."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path}: generator weights do not match its config ({str(err).splitlines()[0]})") from None
    model.train_side = checkpoint.get(DATAMODULE_KEY, {}).get("frame_side")  # None in older checkpoints
    return model.eval(), cfg
