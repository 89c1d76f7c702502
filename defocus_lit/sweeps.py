"""Hyperparameter sweeps (`defocus-lit sweep`, `run_sweep`): one W&B sweep file, run by W&B when it is online
and offline by Optuna.

A sweep file is in W&B's format. Its `command` is `[${env}, defocus-lit, train, EXP, ${args_no_hyphens}]`, so a
sampled point reaches `defocus-lit train` as `key=value` words. A sweep over experiments leaves EXP out of the
command and sweeps a parameter named `experiment`: the agent then passes the word `experiment=NAME`.

The Optuna backend reads the same file (grid/random/bayes -> Grid/Random/TPE sampler, each distribution to the
`suggest_*` call that samples the same values), builds each trial's config from exactly the words a W&B agent
would pass, trains it in this process and stores the study in SQLite under the study folder (or in `--storage`,
which lets workers on several machines share one study). A stopped sweep continues where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, ListConfig
from optuna.trial import FrozenTrial, TrialState

from defocus_lit.config import load_experiment, split_experiment
from defocus_lit.errors import UserError
from defocus_lit.training import TrainResult, run_training, wandb_mode

ARGS = "${args_no_hyphens}"
SWEEP_KEYS = (
    "name",
    "description",
    "program",
    "command",
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "run_cap",
)
METHODS = ("grid", "random", "bayes")
GOALS = ("maximize", "minimize")
# The W&B distributions that Optuna samples the same way; the others (normal, beta, q_log_...) have no Optuna
# counterpart, and a sweep file must run on both backends.
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials that count toward --trials
DEFAULT_TRIALS = 20  # random/bayes sweeps without --trials or run_cap
HEARTBEAT_S = 60  # a RUNNING trial without a heartbeat for 2x this is failed and re-run by any worker
MAX_RETRY = 2  # times one point is re-run after its worker died
WORKER_ATTR = "worker"  # trial user attribute "host:pid" of the process that runs it


BACKENDS = ("wandb", "optuna")


@dataclass
class SweepResult:
    """What a sweep left. Optuna: the study (every trial, those of earlier runs included) and its best completed
    trial as written to best.json (None before any completed). W&B: the sweep's id and project."""

    backend: str
    study_dir: Path
    metric: str
    study: optuna.Study | None = None
    best: dict[str, Any] | None = None
    sweep_id: str | None = None
    project: str | None = None

    def report(self) -> str:
        """An Optuna study's trials table and its best trial with the command that trains it again."""
        if self.study is None:
            return ""
        lines = [trials_table(self.study.trials, self.metric)]
        if self.best is None:
            return "\n".join([*lines, "no trial has completed yet"])
        best = self.best
        lines.append(
            f"best: trial {best['trial']}, {best['metric']}={best['value']:.4g}: {_params_text(best['params'])}"
        )
        lines.append(f"      {self.study_dir / 'best.json'}; train it again with: {best['command']}")
        return "\n".join(lines)


def run_sweep(
    sweep_file: str | Path,
    backend: str | None = None,
    trials: int | None = None,
    study_dir: str | Path | None = None,
    storage: str | None = None,
    overrides: Sequence[str] = (),
) -> SweepResult:
    """Run (or continue) the sweep of `sweep_file` until `trials` trials have finished.

    backend: "wandb", "optuna", or None for W&B when it is online (WANDB_API_KEY or `wandb login`), else Optuna.
    trials: trials to finish, earlier runs of the study included (default: the file's run_cap, else the whole
    grid, else DEFAULT_TRIALS). study_dir: runs, study.db and best.json (default outputs/sweeps/SWEEP_NAME).
    storage: Optuna only, a study storage URL that workers on several machines share (default
    sqlite:///STUDY_DIR/study.db). overrides: fixed `key=value` words for every trial. UserError for bad input.
    """
    path = Path(sweep_file)
    online = wandb_mode("auto") == "online"
    backend = backend or ("wandb" if online else "optuna")
    if backend not in BACKENDS:
        raise UserError(f"--backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    if backend == "wandb" and not online:
        raise UserError(
            "W&B is offline (no WANDB_API_KEY, `wandb login` or WANDB_MODE=online); "
            "run the same sweep offline with --backend optuna"
        )
    if backend == "wandb" and storage:
        raise UserError("--storage: only the optuna backend keeps a study storage")
    if trials is not None and trials < 1:
        raise UserError(f"--trials {trials}: must be at least 1")
    sweep = validate_sweep(path, overrides)
    folder = Path(study_dir) if study_dir else Path("outputs", "sweeps", path.stem)
    count = trial_count(sweep, trials)
    if backend == "wandb":
        return _run_wandb(sweep, overrides, folder, count)
    return _run_optuna(sweep, path.stem, overrides, folder, storage, count)


# ----- the sweep file ---------------------------------------------------------------------------------------------
def validate_sweep(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The sweep file at `path`, checked, with every parameter's `distribution` written out.

    Checks the method, metric, command, that each distribution is one both backends sample alike, and that
    the experiment(s) load with each parameter's candidate values (the ends of a range) and `overrides`, so
    parameters must be config keys (or `experiment`, the experiment names). UserError naming file and key.
    """
    sweep = _read_yaml(Path(path))
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key '{unknown[0]}'; a sweep file has: {', '.join(SWEEP_KEYS)}")
    if sweep.get("method") not in METHODS:
        raise UserError(f"{path}: method: {sweep.get('method')!r} is not one of: {', '.join(METHODS)}")
    _check_metric(path, sweep.get("metric"))
    _check_command(path, sweep.get("command"))
    params = sweep.get("parameters")
    if not isinstance(params, dict) or not params:
        raise UserError(f"{path}: parameters: a mapping of config keys to value specs is required")
    sweep["parameters"] = {name: _parameter(f"{path}: parameters.{name}", spec) for name, spec in params.items()}
    if sweep["method"] == "grid":
        for name, spec in sweep["parameters"].items():
            if spec["distribution"] not in ("categorical", "constant"):
                raise UserError(
                    f"{path}: parameters.{name}: a grid takes `values` (or `value`), not a {spec['distribution']} range"
                )
    if "run_cap" in sweep and not (isinstance(sweep["run_cap"], int) and sweep["run_cap"] > 0):
        raise UserError(f"{path}: run_cap: {sweep['run_cap']!r} must be a positive integer")
    _check_experiment_source(path, sweep)
    fixed = {w.split("=", 1)[0] for w in [*train_words(sweep), *overrides] if "=" in w}
    for name in sweep["parameters"]:
        if name in fixed:
            raise UserError(f"{path}: parameters.{name}: swept, so it cannot also be a fixed override")
    for point, changed in _probe_points(sweep["parameters"]):
        try:
            trial_config(sweep, point, overrides)
        except UserError as err:
            where = f"parameters.{changed}={point[changed]}: " if changed else ""
            raise UserError(f"{path}: {where}{err}") from None
    return sweep


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: no such sweep file")
    try:
        sweep = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path}: not a readable YAML file ({err})") from None
    if not isinstance(sweep, dict):
        raise UserError(f"{path}: a sweep file must be a mapping of keys")
    return sweep


def _check_metric(path: Path, metric: Any) -> None:
    if not isinstance(metric, dict) or metric.get("goal") not in GOALS or not isinstance(metric.get("name"), str):
        raise UserError(f"{path}: metric: must be {{name: val/psnr, goal: maximize|minimize}}")
    if not metric["name"].startswith(("val/", "baseline/")):
        raise UserError(
            f"{path}: metric.name: '{metric['name']}' is not a validation metric (val/psnr, val/ssim, "
            "val/psnr_focus, val/psnr_defocus, val/plane_sensitivity, ...)"
        )


def _check_command(path: Path, command: Any) -> None:
    ok = isinstance(command, list) and all(isinstance(w, str) for w in command) and "train" in command
    if ok:
        at = command.index("train")
        ok = (
            command[:at] in (["defocus-lit"], ["${env}", "defocus-lit"])
            and command[at + 1 :].count(ARGS) == 1
            and command[-1] == ARGS
        )
    if not ok:
        raise UserError(
            f"{path}: command: must be [${{env}}, defocus-lit, train, EXP, {ARGS}] "
            "(without EXP when a parameter named `experiment` picks it)"
        )


def _check_experiment_source(path: Path, sweep: dict[str, Any]) -> None:
    named = [w for w in train_words(sweep) if "=" not in w]
    swept = sweep["parameters"].get("experiment")
    if len(named) + (swept is not None) != 1:
        raise UserError(
            f"{path}: command: name one experiment after `train`, or sweep a parameter `experiment` "
            "and leave it out of the command"
        )
    if swept is not None and swept["distribution"] not in ("categorical", "constant"):
        raise UserError(f"{path}: parameters.experiment: takes `values` (experiment names)")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def _parameter(where: str, spec: Any) -> dict[str, Any]:
    """One parameter's spec with its distribution explicit (inferred as W&B infers it when absent)."""
    if not isinstance(spec, dict):
        raise UserError(f"{where}: must be a mapping with `values`, `value` or `min`/`max`")
    dist = spec.get("distribution") or _inferred_distribution(where, spec)
    if dist not in DISTRIBUTIONS:
        raise UserError(
            f"{where}: distribution '{dist}' is not supported (it must sample alike in W&B and "
            f"Optuna); use one of: {', '.join(DISTRIBUTIONS)}"
        )
    spec = {**spec, "distribution": dist}
    if dist == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values or not all(map(_is_scalar, values)):
            raise UserError(f"{where}: values: a non-empty list of numbers, strings or booleans is required")
    elif dist == "constant":
        if not _is_scalar(spec.get("value")):
            raise UserError(f"{where}: value: a number, string or boolean is required")
    else:
        _check_range(where, dist, spec)
    return spec


def _inferred_distribution(where: str, spec: dict[str, Any]) -> str:
    if "values" in spec:
        return "categorical"
    if "value" in spec:
        return "constant"
    if "min" in spec and "max" in spec:
        ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
        return "int_uniform" if ints else "uniform"
    raise UserError(f"{where}: needs `values`, `value`, or `min` and `max` (with a `distribution`)")


def _check_range(where: str, dist: str, spec: dict[str, Any]) -> None:
    lo, hi = spec.get("min"), spec.get("max")
    if not (_is_number(lo) and _is_number(hi) and lo < hi):
        raise UserError(
            f"{where}: min and max must be numbers with min < max (got {lo!r}, {hi!r}; "
            "YAML reads 1e-3 as text, write 1.0e-3)"
        )
    if dist == "int_uniform" and not (isinstance(lo, int) and isinstance(hi, int)):
        raise UserError(f"{where}: int_uniform takes integer min and max")
    if dist == "log_uniform_values" and lo <= 0:
        raise UserError(f"{where}: log_uniform_values takes min > 0 (log_uniform takes exponents)")
    if dist == "q_uniform":
        q = spec.get("q", 1)
        on_grid = _is_number(q) and q > 0 and all(math.isclose(v / q, round(v / q)) for v in (lo, hi))
        if not on_grid:
            raise UserError(f"{where}: q_uniform takes q > 0 with min and max multiples of q")


def _probes(spec: dict[str, Any]) -> list[Any]:
    """The values of a parameter worth loading a config with: every choice, or both ends of a range."""
    dist = spec["distribution"]
    if dist == "categorical":
        return list(spec["values"])
    if dist == "constant":
        return [spec["value"]]
    if dist == "log_uniform":
        return [math.exp(spec["min"]), math.exp(spec["max"])]
    return [spec["min"], spec["max"]]


def _probe_points(params: dict[str, dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Points that try each candidate value of each parameter once: (point, the parameter it varies)."""
    probes = {name: _probes(spec) for name, spec in params.items()}
    base = {name: values[0] for name, values in probes.items()}
    yield base, None
    for name, values in probes.items():
        for value in values[1:]:
            yield {**base, name: value}, name


def trial_count(sweep: dict[str, Any], trials: int | None) -> int:
    """--trials, else the file's run_cap, else the grid's size, else DEFAULT_TRIALS."""
    if trials:
        return trials
    if "run_cap" in sweep:
        return sweep["run_cap"]
    if sweep["method"] == "grid":
        return math.prod(len(_probes(spec)) for spec in sweep["parameters"].values())
    return DEFAULT_TRIALS


# ----- from a sampled point to a training config --------------------------------------------------------------
def train_words(sweep: dict[str, Any]) -> list[str]:
    """The words the file's command passes `defocus-lit train` before the sampled ones: EXP, fixed key=value."""
    command = sweep["command"]
    return command[command.index("train") + 1 : -1]


def agent_words(params: dict[str, Any]) -> list[str]:
    """A sampled point as the `key=value` words W&B's ${args_no_hyphens} makes of it."""
    return [f"{name}={value}" for name, value in params.items()]


def trial_config(sweep: dict[str, Any], params: dict[str, Any], overrides: Sequence[str] = ()) -> DictConfig:
    """The config a run of this sweep trains with at the point `params`, with fixed `overrides`."""
    return load_experiment(*split_experiment([*train_words(sweep), *overrides, *agent_words(params)]))


def train_command(sweep: dict[str, Any], params: dict[str, Any], overrides: Sequence[str] = ()) -> str:
    """The `defocus-lit train` command line that trains the point `params` on its own."""
    exp, words = split_experiment([*train_words(sweep), *overrides, *agent_words(params)])
    return shlex.join(["defocus-lit", "train", exp, *words])


# ----- W&B --------------------------------------------------------------------------------------------------------
def _run_wandb(sweep: dict[str, Any], overrides: Sequence[str], study_dir: Path, trials: int) -> SweepResult:
    """Register the sweep with W&B and run an agent here; the agent runs the file's command for each point."""
    import wandb

    command = list(sweep["command"])
    command[-1:-1] = [*overrides, f"output_dir={study_dir}"]
    point = next(_probe_points(sweep["parameters"]))[0]
    project = trial_config(sweep, point, overrides).logger.project
    sweep_id = wandb.sweep({**sweep, "command": command}, project=project)
    print(
        f"W&B sweep {sweep_id} in project {project}; more machines join it with `wandb agent "
        f"ENTITY/{project}/{sweep_id}`"
    )
    wandb.agent(sweep_id, project=project, count=trials)
    return SweepResult("wandb", study_dir, sweep["metric"]["name"], sweep_id=sweep_id, project=project)


# ----- Optuna -----------------------------------------------------------------------------------------------------
class PruningCallback(Callback):
    """Reports `metric` to an Optuna trial after every validation and stops a hopeless trial (optuna.TrialPruned).

    Hooks on_validation_end, not on_validation_epoch_end: the module logs its val/* metrics in its own
    on_validation_epoch_end, which Lightning calls after the callbacks' hook of that name.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        self.trial.report(value, step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric}={value:.4g} at epoch {trainer.current_epoch}")


def suggest(trial: optuna.Trial, name: str, spec: dict[str, Any]) -> Any:
    """Sample parameter `name` as W&B samples its distribution (a spec from validate_sweep)."""
    dist = spec["distribution"]
    if dist == "categorical":
        return trial.suggest_categorical(name, spec["values"])
    if dist == "constant":
        return trial.suggest_categorical(name, [spec["value"]])
    lo, hi = spec["min"], spec["max"]
    if dist == "int_uniform":
        return trial.suggest_int(name, lo, hi)
    if dist == "uniform":
        return trial.suggest_float(name, lo, hi)
    if dist == "log_uniform_values":
        return trial.suggest_float(name, lo, hi, log=True)
    if dist == "log_uniform":  # min and max are natural-log exponents
        return trial.suggest_float(name, math.exp(lo), math.exp(hi), log=True)
    if dist == "q_uniform":
        q = spec.get("q", 1)
        if all(isinstance(v, int) for v in (lo, hi, q)):
            return trial.suggest_int(name, lo, hi, step=q)
        return trial.suggest_float(name, lo, hi, step=q)
    raise UserError(f"parameters.{name}: distribution '{dist}' has no Optuna counterpart")


def _sampler(sweep: dict[str, Any]) -> optuna.samplers.BaseSampler:
    if sweep["method"] == "grid":
        return optuna.samplers.GridSampler({name: _probes(spec) for name, spec in sweep["parameters"].items()})
    if sweep["method"] == "random":
        return optuna.samplers.RandomSampler()
    return optuna.samplers.TPESampler()


def _retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Queues a failed trial's point again, up to MAX_RETRY times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study storage, with heartbeats: a trial whose worker died is failed and queued again by any worker."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_S, heartbeat_stale_trial_callback=_retry_callback()
            )
    except (ImportError, ValueError, SQLAlchemyError) as err:
        shown = make_url(url).render_as_string(hide_password=True) if "://" in url else url
        raise UserError(f"--storage {shown}: cannot open the study storage ({err})") from None


def worker_id(pid: int | None = None) -> str:
    """The "host:pid" of the process that runs a trial (this process by default)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, run by another user
        pass
    return False


def reclaim_orphans(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[int]:
    """Fail the RUNNING trials that a process of this machine left behind (killed, interrupted) and queue their
    points again. A dead worker of another machine is found by the storage heartbeat instead, within
    2 x HEARTBEAT_S. Returns the reclaimed trial numbers."""
    study_id = storage.get_study_id_from_name(study.study_name)
    retry = _retry_callback()
    reclaimed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or not _process_gone(int(pid)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:  # the storage directly, not study.tell: no sampler hooks outside optimize()
            changed = storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker reclaimed it first
            continue
        if changed:
            retry(study, trial)
            reclaimed.append(trial.number)
    return reclaimed


def _one_device(cfg: DictConfig) -> None:
    """Trials train in this process on one device: Lightning's DDP launcher would start this whole sweep command
    again for each extra device. Several GPUs: one worker per GPU on one study (CUDA_VISIBLE_DEVICES, --storage)."""
    devices, nodes = cfg.trainer.get("devices", "auto"), cfg.trainer.get("num_nodes", 1)
    single = devices in (1, "1") or (isinstance(devices, ListConfig) and len(devices) == 1)
    if devices == "auto":
        cfg.trainer.devices = 1
    elif not single or nodes != 1:
        raise UserError(
            f"trainer.devices={devices}, trainer.num_nodes={nodes}: an Optuna trial trains on one "
            "device; run one sweep worker per GPU on a shared study (CUDA_VISIBLE_DEVICES=i, --storage)"
        )


def _metric_value(result: TrainResult, metric: str) -> float:
    if metric not in result.metrics:
        raise UserError(f"metric.name: '{metric}' is not among the run's metrics: {', '.join(sorted(result.metrics))}")
    return result.metrics[metric]


def _objective(sweep: dict[str, Any], overrides: Sequence[str], study_dir: Path) -> Callable[[optuna.Trial], float]:
    metric = sweep["metric"]["name"]

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_id())
        params = {name: suggest(trial, name, spec) for name, spec in sweep["parameters"].items()}
        run_words = [*overrides, f"output_dir={study_dir}", f"run=trial_{trial.number:03d}"]
        cfg = trial_config(sweep, params, run_words)
        _one_device(cfg)
        trial.set_user_attr("command", train_command(sweep, params, overrides))
        trial.set_user_attr("run_dir", str(Path(cfg.output_dir, cfg.name, cfg.run)))
        print(f"trial {trial.number}: {train_command(sweep, params, run_words)}", flush=True)
        try:
            result = run_training(cfg, callbacks=[PruningCallback(trial, metric)])
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into sys.exit(1)
            print(f"interrupted: trial {trial.number} runs again when this sweep is started again")
            raise SystemExit(130) from None  # not caught by optuna: the trial stays RUNNING, reclaimed on restart
        trial.set_user_attr("best_ckpt", str(result.best_ckpt))
        return _metric_value(result, metric)

    return objective


def _run_optuna(
    sweep: dict[str, Any], name: str, overrides: Sequence[str], study_dir: Path, storage_url: str | None, trials: int
) -> SweepResult:
    """Run (or continue) the study `name` until `trials` trials have completed or been pruned."""
    study_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url or f"sqlite:///{(study_dir / 'study.db').resolve()}")
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        sampler=_sampler(sweep),
        direction=sweep["metric"]["goal"],
        pruner=optuna.pruners.MedianPruner(),
    )
    reclaimed = reclaim_orphans(study, storage)
    if reclaimed:
        print(f"trial(s) {', '.join(map(str, reclaimed))} left unfinished by a stopped sweep: running again")
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    print(
        f"Optuna study '{name}' ({sweep['method']}, {sweep['metric']['goal']} {sweep['metric']['name']}): "
        f"{done} of {trials} trials done; runs in {study_dir}",
        flush=True,
    )
    if done < trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(
                _objective(sweep, overrides, study_dir),
                n_trials=trials - done,
                gc_after_trial=True,
                callbacks=[optuna.study.MaxTrialsCallback(trials, states=FINISHED)],
            )
    best = best_summary(study, sweep)
    if best is not None:
        (study_dir / "best.json").write_text(json.dumps(best, indent=2))
    return SweepResult("optuna", study_dir, sweep["metric"]["name"], study=study, best=best)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def trials_table(trials: Sequence[FrozenTrial], metric: str) -> str:
    """One line per trial: number, state, value (a pruned trial's last report in parentheses), params."""
    rows = [("trial", "state", metric, "params")]
    for t in trials:
        if t.value is not None:
            value = f"{t.value:.4g}"
        elif t.intermediate_values:
            value = f"({t.intermediate_values[max(t.intermediate_values)]:.4g})"
        else:
            value = "-"
        rows.append((str(t.number), t.state.name, value, _params_text(t.params)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:>{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows)


def best_summary(study: optuna.Study, sweep: dict[str, Any]) -> dict[str, Any] | None:
    """The best completed trial as written to best.json; None before any trial completed."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    return {
        "study": study.study_name,
        "metric": sweep["metric"]["name"],
        "goal": sweep["metric"]["goal"],
        "trial": best.number,
        "value": best.value,
        "params": best.params,
        "command": best.user_attrs.get("command"),
        "run_dir": best.user_attrs.get("run_dir"),
        "best_ckpt": best.user_attrs.get("best_ckpt"),
    }
