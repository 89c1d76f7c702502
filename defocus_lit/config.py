"""Experiment configuration: experiments/base.yaml <- experiments/EXP.yaml <- CPU preset <- key=value words.

Every key must exist in base.yaml, with two open sections: `trainer.*` takes any `lightning.Trainer` argument,
and `loss.terms.*` any registered loss name (checked when the model is built).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from defocus_lit.data.planes import MASK_KINDS
from defocus_lit.errors import UserError
from defocus_lit.losses import GANLoss
from defocus_lit.models.defocuser import HEADS
from defocus_lit.models.networks import GENERATORS, NORMS
from defocus_lit.render import BLUR_MODELS

OPEN_SECTIONS = ("trainer", "loss.terms")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def experiments_dir() -> Path:
    """The `experiments/` folder beside the package (editable install), else the one in the working directory."""
    beside = Path(__file__).resolve().parent.parent / "experiments"
    return beside if beside.is_dir() else Path.cwd() / "experiments"


def experiment_names() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml") if p.stem != "base")


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as err:
        raise UserError(f"{path}: not a readable YAML config ({err})") from None
    if not isinstance(cfg, DictConfig):
        raise UserError(f"{path}: a config must be a mapping of keys")
    return cfg


def _experiment_path(exp: str) -> Path:
    path = Path(exp)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"{path}: no such experiment file")
        return path
    path = experiments_dir() / f"{exp}.yaml"
    if exp == "base" or not path.is_file():
        raise UserError(f"unknown experiment '{exp}'; experiments: {', '.join(experiment_names())}")
    return path


def config_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """All dotted leaf keys of `cfg`, e.g. `optim.lr`, `loss.terms.l1`."""
    keys: list[str] = []
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if dotted in OPEN_SECTIONS and isinstance(value, DictConfig):
            keys += [f"{dotted}.{child}" for child in value]
        elif isinstance(value, DictConfig) and len(value) > 0:
            keys += config_keys(value, dotted + ".")
        else:
            keys.append(dotted)
    return keys


def trainer_args() -> list[str]:
    import lightning

    return [n for n in inspect.signature(lightning.Trainer.__init__).parameters if n != "self"]


def check_keys(cfg: DictConfig, base: DictConfig, source: str) -> None:
    """Reject a key of `cfg` that base.yaml does not define (outside the open sections)."""
    known = set(config_keys(base))
    for key in config_keys(cfg):
        if key.startswith("trainer."):
            name = key.split(".", 2)[1]
            if name not in trainer_args():
                raise UserError(
                    f"{source}: unknown key '{key}'; trainer.* takes lightning.Trainer arguments: "
                    f"{', '.join(trainer_args())}"
                )
        elif key not in known and not key.startswith("loss.terms."):
            raise UserError(f"{source}: unknown key '{key}'; valid keys: {', '.join(sorted(known))}")


def split_experiment(words: Sequence[str]) -> tuple[str, list[str]]:
    """EXP and the override words of a `defocus-lit train` word list. The experiment is the one word without
    `=` or an `experiment=NAME` word (how a W&B agent passes a swept experiment), wherever it stands."""
    names = [w for w in words if "=" not in w] + [w.split("=", 1)[1] for w in words if w.startswith("experiment=")]
    if len(names) != 1:
        raise UserError(f"experiment: name exactly one (EXP or experiment=NAME) in: {' '.join(words)}")
    return names[0], [w for w in words if "=" in w and not w.startswith("experiment=")]


def parse_overrides(words: Sequence[str]) -> DictConfig:
    """`key=value` words (values parsed as YAML, e.g. `optim.lr=1e-4`, `data.path=null`) into a config."""
    for word in words:
        if "=" not in word or word.startswith("="):
            raise UserError(f"'{word}': overrides are written key=value (e.g. optim.lr=1e-4)")
    try:
        return OmegaConf.from_dotlist(list(words))
    except OmegaConfBaseException as err:
        raise UserError(f"bad override ({err})") from None


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def load_experiment(exp: str, overrides: Sequence[str] = (), cpu_preset: bool | None = None) -> DictConfig:
    """The merged config of experiment `exp` (a name in experiments/ or a YAML path).

    `cpu_preset`: None = apply experiments/presets/cpu.yaml when no GPU is present (a `cpu_preset=true|false`
    override word decides too); the preset sits between the experiment file and the override words.
    """
    words = [w for w in overrides if not w.startswith("cpu_preset=")]
    for word in overrides:
        if word.startswith("cpu_preset="):
            value = OmegaConf.from_dotlist([word]).cpu_preset
            if not isinstance(value, bool):
                raise UserError(f"'{word}': cpu_preset takes true or false")
            cpu_preset = value
    base = _load_yaml(experiments_dir() / "base.yaml")
    exp_path = _experiment_path(exp)
    exp_cfg = _load_yaml(exp_path)
    check_keys(exp_cfg, base, str(exp_path))
    layers = [base, exp_cfg]
    if cpu_preset is None:
        cpu_preset = not gpu_available()
    if cpu_preset:
        preset_path = experiments_dir() / "presets" / "cpu.yaml"
        layers.append(_load_yaml(preset_path))
    override_cfg = parse_overrides(words)
    check_keys(override_cfg, base, "override")
    layers.append(override_cfg)
    cfg = OmegaConf.merge(*layers)
    if "loss" in exp_cfg and "terms" in exp_cfg.loss:  # an experiment's terms replace base's, not add to them
        terms = OmegaConf.merge(exp_cfg.loss.terms, override_cfg.get("loss", {}).get("terms", {}))
        cfg.loss.terms = terms
    cfg.cpu_preset = bool(cpu_preset)
    _check_values(cfg)
    return cfg


def _check_values(cfg: DictConfig) -> None:
    choices = {
        "arch": tuple(GENERATORS),
        "model.norm": tuple(NORMS),
        "model.head": HEADS,
        "loss.gan_mode": GANLoss.MODES,
        "data.mask_kind": MASK_KINDS,
        "render.blur_model": BLUR_MODELS,
        "logger.wandb": WANDB_MODES,
    }
    for key, valid in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in valid:
            raise UserError(f"{key}={value!r} is not one of: {', '.join(valid)}")
    for key in ("model.ngf", "model.num_downs", "data.batch_size", "data.crop_size"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{key}={value!r} must be a positive integer")
    if cfg.data.crop_size % (2**cfg.model.num_downs):
        raise UserError(
            f"data.crop_size={cfg.data.crop_size} must be a multiple of 2**model.num_downs = {2**cfg.model.num_downs}"
        )
    if cfg.data.path is not None and not Path(str(cfg.data.path)).is_file():
        raise UserError(f"data.path: {cfg.data.path}: no such file")


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
