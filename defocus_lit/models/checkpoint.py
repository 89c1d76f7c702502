"""Loading a trained generator from a Lightning checkpoint, for predict, evaluate and export."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from defocus_lit.errors import UserError
from defocus_lit.models.gan import keep_focus
from defocus_lit.models.networks import build_generator


class Defocuser(nn.Module):
    """The deployable model: generator plus the keep-focus composite. No discriminator, no Lightning."""

    def __init__(self, generator: nn.Module, keep_focus: bool, multiple: int) -> None:
        super().__init__()
        self.generator = generator
        self.keep_focus = keep_focus
        self.multiple = multiple  # H and W must be multiples of this

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """image (B,3,H,W) in [-1,1], mask (B,1,H,W) in [0,1] (0 = keep sharp) -> (B,3,H,W) in [-1,1]."""
        output = self.generator(image, mask)
        return keep_focus(output, image, mask) if self.keep_focus else output


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(checkpoint, dict) or "cfg" not in checkpoint.get("hyper_parameters", {}):
        raise UserError(f"{path}: not a defocus_lit checkpoint (no hyper_parameters.cfg)")
    return checkpoint


def load_checkpoint(path: str | Path) -> tuple[Defocuser, DictConfig]:
    """The generator of a `defocus-lit train` checkpoint in eval mode, and the run's config."""
    checkpoint = read_checkpoint(path)
    cfg = OmegaConf.create(checkpoint["hyper_parameters"]["cfg"])
    m = cfg.model
    generator = build_generator(cfg.arch, ngf=m.ngf, num_downs=m.num_downs, norm=m.norm, dropout=m.dropout)
    prefix = "generator."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    try:
        generator.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path}: generator weights do not match its config ({str(err).splitlines()[0]})") from None
    return Defocuser(generator, cfg.keep_focus, 2 ** m.num_downs).eval(), cfg
