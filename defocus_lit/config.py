"""Experiment configuration: experiments/base.yaml <- experiments/EXP.yaml <- CPU preset <- key=value words.

The schema (`ExperimentConfig` and its sections below) gives every key its type; base.yaml gives every key its
value (the schema's fields have no defaults of their own, so a value is written in one place). Each layer is
merged into the typed config by OmegaConf, which converts and type-checks it; a wrong value is one `UserError`
naming the key, the expected type, the value and the file (or `override` for key=value words). Choices are checked
against the registries that define them (`choices=` below), never against a copied list.

Two sections are open: `trainer.*` takes any `lightning.Trainer` argument (checked when the Trainer is built),
and `loss.terms.*` any registered loss name. Adding a key is one line in the schema plus its value in base.yaml.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from defocus_lit.data.planes import MASK_KINDS, PLANES, check_patch_split
from defocus_lit.errors import UserError
from defocus_lit.losses import LOSSES, GANLoss
from defocus_lit.models.defocuser import HEADS
from defocus_lit.models.networks import GENERATORS, NORMS
from defocus_lit.render import BLUR_MODELS, check_strength_range

OPEN_SECTIONS = ("trainer", "loss.terms")
WANDB_MODES = ("auto", "online", "offline", "disabled")  # the modes `training.wandb_mode` understands


# ----- the schema ---------------------------------------------------------------------------------------------
def key(*, choices: Callable[[], Collection[str]] | None = None, minimum: int | None = None) -> Any:
    """A schema field whose value comes from base.yaml; `choices` returns the registry of valid values (called at
    load time, so a generator or norm registered later counts), `minimum` the least valid number."""
    return field(default=MISSING, metadata={"choices": choices, "minimum": minimum})


@dataclass
class ModelConfig:
    ngf: int = key(minimum=1)
    num_downs: int = key(minimum=1)
    norm: str = key(choices=lambda: NORMS)
    dropout: bool = key()
    global_context: bool = key()
    ndf: int = key(minimum=1)
    d_layers: int = key(minimum=1)
    head: str = key(choices=lambda: HEADS)
    stack_levels: int = key(minimum=1)
    amount_input: bool = key()
    exact_amount: bool = key()
    level_smooth: float = key(minimum=0)


@dataclass
class LossConfig:
    terms: dict[str, float] = key(choices=lambda: LOSSES)  # the choices apply to the names
    gan_mode: str = key(choices=lambda: GANLoss.MODES)
    gan_weight: float = key()
    coarse_weight: float = key()


@dataclass
class OptimConfig:
    lr: float = key()
    beta1: float = key()
    beta2: float = key()
    decay_fraction: float = key()
    grad_clip: float | None = key()


@dataclass
class SyntheticConfig:
    num: int = key(minimum=1)
    size: list[int] = key()
    seed: int = key()
    planes: list[str] = key(choices=lambda: PLANES)


@dataclass
class DataConfig:
    path: str | None = key()
    mask_kind: str = key(choices=lambda: MASK_KINDS)
    crop_size: int = key(minimum=1)
    batch_size: int = key(minimum=1)
    num_workers: int = key(minimum=0)
    photometric: bool = key()
    unknown_amount: float = key()
    strength_range: list[float] | None = key()
    patch_split: list[float] | None = key()
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class RenderConfig:
    blur_model: str = key(choices=lambda: BLUR_MODELS)
    k: float = key()
    max_radius: float = key()
    layers: int = key(minimum=1)


@dataclass
class LoggerConfig:
    wandb: str = key(choices=lambda: WANDB_MODES)
    project: str = key()
    num_images: int = key(minimum=0)


@dataclass
class ExperimentConfig:
    name: str = key()
    seed: int = key()
    arch: str = key(choices=lambda: GENERATORS)
    keep_focus: bool = key()
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    trainer: dict[str, Any] = key()
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    output_dir: str = key()
    run: str | None = key()
    resume: bool | str = key()
    cpu_preset: bool = False  # set by load_experiment (not a file key): whether presets/cpu.yaml was applied


SET_BY_LOADER = ("cpu_preset",)


def _field(dotted: str) -> tuple[Any, dict]:
    """The type hint and metadata of the schema field at `dotted` (`optim.lr`, `loss.terms.l1`); (Any, {}) for a
    key inside an open section."""
    cls: Any = ExperimentConfig
    hint: Any = ExperimentConfig
    meta: dict = {}
    for part in dotted.split("."):
        if dataclasses.is_dataclass(cls):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if part not in fields:
                return Any, {}
            hint, meta = typing.get_type_hints(cls)[part], dict(fields[part].metadata)
        elif typing.get_origin(hint) is dict:
            hint, meta = typing.get_args(hint)[1], {}
        else:
            return Any, {}
        cls = hint
    return hint, meta


_TYPE_NAMES = {float: "a float", int: "an integer", bool: "true or false", str: "a string", type(None): "null"}


def describe_type(hint: Any) -> str:
    """`float | None` -> 'a float or null', `list[int]` -> 'a list of integers'."""
    if hint in _TYPE_NAMES:
        return _TYPE_NAMES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {describe_type(args[0]).split(' ', 1)[-1]}s"
    if origin is dict:
        return f"a mapping of names to {describe_type(args[1]).split(' ', 1)[-1]}s"
    if args:  # a union
        return " or ".join(describe_type(a) for a in args)
    return getattr(hint, "__name__", str(hint))


def matches(value: Any, hint: Any) -> bool:
    """Whether a plain (YAML) value fits a type hint. Parts of a hint that no YAML value can be (a Logger, a
    timedelta) are ignored, and a hint made only of such parts accepts anything: Lightning decides then."""
    checkable = _checkable(hint)
    if checkable is None:
        return True
    return any(_fits(value, h) for h in checkable)


def _checkable(hint: Any) -> list[Any] | None:
    """The members of `hint` (a union's, or itself) that a YAML value can have; None when there are none."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    plain = [h for h in members if h in _TYPE_NAMES or typing.get_origin(h) is typing.Literal]
    plain += [h for h in members if typing.get_origin(h) in (list, dict) and _checkable(typing.get_args(h)[-1])]
    return plain if any(h is not type(None) for h in plain) else None


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(matches(v, args[1]) for v in value.values())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def trainer_hints() -> dict[str, Any]:
    import lightning

    return typing.get_type_hints(lightning.Trainer.__init__)


# ----- files, keys ---------------------------------------------------------------------------------------------
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
    for name in cfg:
        dotted = f"{prefix}{name}"
        if OmegaConf.is_missing(cfg, name):  # a schema key without a value yet ("???"): reading it would raise
            keys.append(dotted)
            continue
        value = cfg[name]
        if dotted in OPEN_SECTIONS and isinstance(value, DictConfig):
            keys += [f"{dotted}.{child}" for child in value]
        elif isinstance(value, DictConfig) and len(value) > 0:
            keys += config_keys(value, dotted + ".")
        else:
            keys.append(dotted)
    return keys


def schema_keys() -> list[str]:
    """Every key a file or override may set (the open sections by their name)."""
    keys = config_keys(OmegaConf.structured(ExperimentConfig))
    return [k for k in keys if k not in SET_BY_LOADER]


def trainer_args() -> list[str]:
    import lightning

    return [n for n in inspect.signature(lightning.Trainer.__init__).parameters if n != "self"]


def check_keys(cfg: DictConfig, source: str) -> None:
    """Reject a key of `cfg` that the schema does not define (outside the open sections)."""
    known = set(schema_keys())
    for dotted in config_keys(cfg):
        if dotted.startswith("trainer."):
            name = dotted.split(".", 2)[1]
            if name not in trainer_args():
                raise UserError(
                    f"{source}: unknown key '{dotted}'; trainer.* takes lightning.Trainer arguments: "
                    f"{', '.join(trainer_args())}"
                )
        elif dotted not in known and not dotted.startswith("loss.terms."):
            raise UserError(f"{source}: unknown key '{dotted}'; valid keys: {', '.join(sorted(known))}")


def _value_text(value: Any) -> str:
    """A value as the user wrote it: YAML's true/false/null, strings quoted."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


def check_values(layer: DictConfig, source: str) -> None:
    """What OmegaConf's conversion lets through: a quoted string for a boolean (OmegaConf reads 'no' and 'off' as
    false, but a quoted word in a YAML file is a mistake, not a choice), a value outside its registry, a number
    below its minimum."""
    for dotted in config_keys(layer):
        hint, meta = _field(dotted)
        value = OmegaConf.select(layer, dotted, throw_on_missing=False)
        where = f" ({source})"
        if dotted.startswith("trainer."):  # free-form, but typed by lightning.Trainer's own signature
            arg_hint = trainer_hints().get(dotted.split(".")[1], Any)
            plain = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
            if not matches(plain, arg_hint):
                shown = " or ".join(describe_type(h) for h in _checkable(arg_hint) or [])
                raise UserError(f"{dotted}: expected {shown}, got {_value_text(value)}{where}")
            continue
        if hint is bool and not isinstance(value, bool):
            raise UserError(f"{dotted}: expected true or false, got {_value_text(value)}{where}")
        parent_meta = _field(dotted.rsplit(".", 1)[0])[1] if dotted.startswith(OPEN_SECTIONS[1] + ".") else {}
        if parent_meta.get("choices"):  # loss.terms.NAME: the name must be registered
            name = dotted.rsplit(".", 1)[1]
            if name not in parent_meta["choices"]():
                valid = ", ".join(sorted(parent_meta["choices"]()))
                raise UserError(f"{dotted}: unknown loss term '{name}'; registered: {valid}{where}")
        choices = meta.get("choices")
        values = list(value) if isinstance(value, ListConfig) else [value]  # a list: each item is a choice
        bad = [v for v in values if v not in choices()] if choices and not isinstance(value, (DictConfig, dict)) else []
        if bad:
            raise UserError(f"{dotted}: expected one of {', '.join(choices())}, got {_value_text(bad[0])}{where}")
        minimum = meta.get("minimum")
        if minimum is not None and isinstance(value, int | float) and not isinstance(value, bool) and value < minimum:
            kind = "an integer" if hint is int else "a number"
            raise UserError(f"{dotted}: expected {kind} >= {minimum}, got {value}{where}")


def merge_layer(cfg: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    """`cfg` with `layer` (one file or the override words) merged in, every key and value checked and converted
    to its schema type; UserError naming key, expected type, value and `source`."""
    check_keys(layer, source)
    check_values(layer, source)
    try:
        return OmegaConf.merge(cfg, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        dotted = re.sub(r"\[\d+\]$", "", str(getattr(err, "full_key", "") or ""))
        if not dotted:
            raise UserError(f"{source}: {str(err).splitlines()[0]}") from None
        hint, _ = _field(dotted)
        value = OmegaConf.select(layer, dotted, throw_on_missing=False)
        raise UserError(f"{dotted}: expected {describe_type(hint)}, got {_value_text(value)} ({source})") from None


# ----- loading -------------------------------------------------------------------------------------------------
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
    """The merged, typed config of experiment `exp` (a name in experiments/ or a YAML path).

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
    base_path, exp_path = experiments_dir() / "base.yaml", _experiment_path(exp)
    cfg = merge_layer(OmegaConf.structured(ExperimentConfig), _load_yaml(base_path), str(base_path))
    exp_cfg = _load_yaml(exp_path)
    if OmegaConf.select(exp_cfg, "loss.terms") is not None:  # an experiment's terms replace base's, not add to them
        cfg.loss.terms = {}
    cfg = merge_layer(cfg, exp_cfg, str(exp_path))
    if cpu_preset is None:
        cpu_preset = not gpu_available()
    if cpu_preset:
        preset_path = experiments_dir() / "presets" / "cpu.yaml"
        cfg = merge_layer(cfg, _load_yaml(preset_path), str(preset_path))
    cfg = merge_layer(cfg, parse_overrides(words), "override")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"{base_path}: no value for {', '.join(missing)} (every schema key needs one)")
    cfg.cpu_preset = bool(cpu_preset)
    _check_combination(cfg)
    return cfg


def _check_combination(cfg: DictConfig) -> None:
    """Values that are wrong only together, or only on this machine."""
    if cfg.data.crop_size % (2**cfg.model.num_downs):
        raise UserError(
            f"data.crop_size={cfg.data.crop_size} must be a multiple of 2**model.num_downs = {2**cfg.model.num_downs}"
        )
    if cfg.data.path is not None and not Path(str(cfg.data.path)).is_file():
        raise UserError(f"data.path: {cfg.data.path}: no such file")
    if len(cfg.data.synthetic.size) != 2 or min(cfg.data.synthetic.size) < 1:
        raise UserError(f"data.synthetic.size={list(cfg.data.synthetic.size)} must be [height, width]")
    if not 0 <= cfg.data.unknown_amount <= 1:
        raise UserError(f"data.unknown_amount={cfg.data.unknown_amount:g}: a share of the samples, from 0 to 1")
    check_strength_range(cfg.data.strength_range, "data.strength_range")
    check_patch_split(cfg.data.patch_split, "data.patch_split", cfg.data.mask_kind, "data.mask_kind")
    if cfg.data.strength_range is not None and not cfg.model.amount_input:
        raise UserError(
            "data.strength_range: trains the amount input on targets rendered again at other strengths; "
            "needs model.amount_input=true"
        )


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
