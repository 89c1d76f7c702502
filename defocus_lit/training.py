"""Training one experiment with Lightning: dataset, run folder, loggers, callbacks, Trainer, resume.

`run_training(cfg)` is what `defocus-lit train` and the sweep trials call."""

from __future__ import annotations

import json
import netrc
import os
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from defocus_lit import slurm
from defocus_lit.baselines import NAMES as BASELINE_NAMES
from defocus_lit.config import to_container
from defocus_lit.errors import UserError, disk_full, error_chain
from defocus_lit.io import atomic_path, ensure_folder, folder_lock
from defocus_lit.losses import READS_RADIUS
from defocus_lit.models.checkpoint import unreadable

SUMMARY_KEYS = (
    "val/psnr",
    "val/ssim",
    "val/psnr_focus",
    "val/psnr_defocus",
    "val/plane_sensitivity",
    "val/depth_gain",
    "val/oracle_gap",
    "val/told_psnr_defocus",
    "val/told_oracle_gap",
    *(f"baseline/{name}/val/{metric}" for name in BASELINE_NAMES for metric in ("psnr", "psnr_defocus")),
)


@dataclass
class TrainResult:
    """Where a run went; the paths are None for `trainer.fast_dev_run`, which writes nothing."""

    run_dir: Path | None
    best_ckpt: Path | None
    last_ckpt: Path | None
    metrics_csv: Path | None
    metrics: dict[str, float]


# ----- data ---------------------------------------------------------------------------------------------------
def _is_rank_zero() -> bool:
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def synthetic_dataset(cfg: DictConfig, cache_dir: Path = Path("data")) -> Path:
    """The embedded synthetic dataset for `cfg`, built once and cached under `cache_dir`."""
    from defocus_lit.data.build import build_dataset
    from defocus_lit.data.planes import PAPER_PLANES
    from defocus_lit.data.sources import open_source
    from defocus_lit.data.synthetic import SCENES_VERSION
    from defocus_lit.render import RenderSettings

    s, r = cfg.data.synthetic, cfg.render
    height, width = s.size
    renderer = f"{r.blur_model}_k{r.k:g}_r{r.max_radius:g}_l{r.layers}"
    planes = "" if tuple(s.planes) == PAPER_PLANES else "_" + "-".join(s.planes)
    name = f"synthetic_v{SCENES_VERSION}_n{s.num}_{height}x{width}_s{s.seed}{planes}_{renderer}.h5"
    path = cache_dir / name
    if path.is_file():
        return path
    if not _is_rank_zero():  # another process of this job builds it
        while not path.is_file():
            time.sleep(2)
        return path
    print(f"Building the embedded synthetic dataset once: {path} ({s.num} frames of {height}x{width})")
    ensure_folder(cache_dir)
    source = open_source("synthetic", num=s.num, size=(height, width), seed=s.seed)
    build_dataset(source, path, planes=tuple(s.planes), settings=RenderSettings(**to_container(r)), seed=s.seed)
    return path


def dataset_path(cfg: DictConfig) -> Path:
    """The HDF5 file to train on; records the renderer settings that made it in `cfg.render`."""
    from defocus_lit.data.hdf5 import read_info

    path = Path(cfg.data.path) if cfg.data.path else synthetic_dataset(cfg)
    cfg.merge_with({"render": read_info(path)["renderer"]})
    return path


# ----- run folder, loggers ------------------------------------------------------------------------------------
def _last_checkpoint(cfg: DictConfig) -> Path | None:
    if cfg.resume in (False, None):
        return None
    if cfg.resume is not True:
        path = Path(str(cfg.resume))
        if not path.is_file():
            raise UserError(f"resume: {path}: no such checkpoint")
        return path
    runs = sorted(Path(cfg.output_dir, cfg.name).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"resume=true: no run of '{cfg.name}' with a last.ckpt under {Path(cfg.output_dir, cfg.name)}")
    return runs[-1]


def run_folder(cfg: DictConfig) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to start from (None: from scratch).

    Outside Slurm, resume=true|PATH continues that checkpoint's run; otherwise a new run `run` (or a timestamp).
    A Slurm job owns its run, OUTPUT_DIR/NAME/slurm-JOBID (or `run`): a requeued attempt resumes it from its newest
    checkpoint, Lightning's hpc_ckpt_N.ckpt from the signal included, and one with no checkpoint yet starts it
    again as the first attempt did (afresh, or from resume=true|PATH)."""
    exp_dir = Path(cfg.output_dir, cfg.name)
    job_run = slurm.run_name()
    if job_run is None:
        last = _last_checkpoint(cfg)
        return (last.parent.parent if last else exp_dir / (cfg.run or time.strftime("%Y%m%d-%H%M%S"))), last
    run_dir = exp_dir / (cfg.run or job_run)
    own = slurm.newest_checkpoint(run_dir) if slurm.attempt() > 1 else None
    return run_dir, own or _last_checkpoint(cfg)


def wandb_mode(setting: str) -> str | None:
    """W&B is offline unless the user turned it online (WANDB_MODE, WANDB_API_KEY or `wandb login`)."""
    if setting != "auto":
        return None if setting == "disabled" else setting
    if os.environ.get("WANDB_MODE"):
        return None if os.environ["WANDB_MODE"] == "disabled" else os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        logged_in = netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    return "online" if logged_in else "offline"


def csv_version(run_dir: Path) -> str:
    """`csv` for a new run; `csv_resume1`, `csv_resume2`, ... for resumes, so no earlier rows are overwritten."""
    done = sum(1 for p in run_dir.glob("csv*") if (p / "metrics.csv").is_file())
    return "csv" if done == 0 else f"csv_resume{done}"


WANDB_ID_FILE = "wandb_id.txt"  # a resumed run continues its W&B run


def make_loggers(cfg: DictConfig, run_dir: Path) -> list:
    """The run's loggers; nothing is written until training starts (`writing_run_folder` records the W&B id)."""
    loggers: list = [CSVLogger(run_dir, name="", version=csv_version(run_dir))]
    mode = wandb_mode(cfg.logger.wandb)
    if mode:
        id_file = run_dir / WANDB_ID_FILE
        run_id = (id_file.read_text().strip() if id_file.is_file() else "") or secrets.token_hex(4)
        loggers.append(
            WandbLogger(
                project=cfg.logger.project,
                name=f"{cfg.name}/{run_dir.name}",
                save_dir=str(run_dir),
                mode=mode,
                id=run_id,
                resume="allow",
                config=to_container(cfg),
            )
        )
    return loggers


def trainer_kwargs(cfg: DictConfig) -> dict:
    """`cfg.trainer` as Trainer arguments. A GAN step leaves G's weights out of D's backward, so multi-device
    runs with the default strategy use DDP with unused-parameter detection."""
    kwargs = to_container(cfg.trainer)
    devices, nodes = kwargs.get("devices", "auto"), kwargs.get("num_nodes", 1)
    many = (isinstance(devices, int) and devices > 1) or (isinstance(devices, list) and len(devices) > 1) or nodes > 1
    if many and kwargs.get("strategy", "auto") == "auto":
        kwargs["strategy"] = "ddp_find_unused_parameters_true"
    return kwargs


class CheckpointFiles(TorchCheckpointIO):
    """Lightning's checkpoint files, written with the package's one atomic write (`atomic_path`): beside the final
    name, renamed when complete. Lightning's own save writes to the system's temporary folder and moves the file
    over, which between two file systems (a node's /tmp, a cluster's shared disk) is a copy into place: a full disk
    or a kill during it left a cut-short checkpoint, and one replacing last.ckpt had emptied it first."""

    def save_checkpoint(self, checkpoint: dict, path: str | os.PathLike, storage_options: object | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)  # into a Python file: torch's own file writer aborts on a full disk


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: Sequence[Callback]) -> L.Trainer:
    """The Trainer of `cfg.trainer`, built before anything is written: a bad Trainer argument is a UserError
    naming the trainer.* keys it is about (Lightning raises TypeError, ValueError or its own exceptions)."""
    kwargs = trainer_kwargs(cfg)
    dry = is_fast_dev_run(cfg)
    plugins = kwargs.pop("plugins", None) or []  # the user's (trainer.plugins), then ours
    try:
        return L.Trainer(
            **kwargs,
            default_root_dir=run_dir,
            logger=False if dry else make_loggers(cfg, run_dir),
            callbacks=list(callbacks),
            plugins=[*(plugins if isinstance(plugins, list) else [plugins]), CheckpointFiles()],
        )
    except (TypeError, ValueError, ImportError, MisconfigurationException) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        named = [k for k in cfg.trainer if k in message] or list(cfg.trainer)
        settings = ", ".join(f"trainer.{k}={cfg.trainer[k]!r}" for k in named)
        raise UserError(f"trainer: {message} ({settings})") from None


def is_fast_dev_run(cfg: DictConfig) -> bool:
    """`trainer.fast_dev_run`: Lightning's smoke test (a batch of training and validation); the run writes nothing."""
    return bool(cfg.trainer.get("fast_dev_run", False))


@contextmanager
def writing_run_folder(cfg: DictConfig, run_dir: Path, trainer: L.Trainer) -> Iterator[None]:
    """RUN/ with config.yaml (and the W&B id), made as training starts and locked while it runs (`folder_lock`: a
    second training of the same run stops before writing anything); if the start fails (an exception before any
    checkpoint) a folder made here is removed again, so a failed start leaves nothing behind."""
    created = next((p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()), None)
    ensure_folder(run_dir)  # output_dir under a file: one error naming the folder
    if not _is_rank_zero():  # rank zero holds the lock for the job
        yield
        return
    with folder_lock(run_dir, "wait for that training to end, or choose another run=NAME"):
        OmegaConf.save(cfg, run_dir / "config.yaml")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                (run_dir / WANDB_ID_FILE).write_text(str(logger.version))
        try:
            yield
        except BaseException:
            if created is not None and not any(run_dir.glob("checkpoints/*.ckpt")):
                shutil.rmtree(created, ignore_errors=True)
            raise


# ----- faults -------------------------------------------------------------------------------------------------
# torch's messages when a DataLoader worker process died (the out-of-memory killer takes one with SIGKILL)
WORKER_DIED = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) (?:is killed by signal: ([^.]+)|exited)")


def fault_error(err: BaseException, cfg: DictConfig, run_dir: Path) -> UserError | None:
    """A run stopped by a fault of the machine rather than of the run (a full disk or quota, a data worker killed)
    as one line: what happened, the checkpoint that is kept and how to go on; None for any other error."""
    if full := disk_full(err):
        what, then, tip = f"{full.path or run_dir}: no space left on device", "free space, then resume", ""
    elif reports := [found for link in error_chain(err) if (found := WORKER_DIED.search(str(link)))]:
        # "exited unexpectedly" (a wait for a batch found the worker gone) is often raised from the SIGCHLD
        # handler's report, which names the signal: the most telling one is kept
        pids, signal_name = next((r for r in reports if r.group(2)), reports[0]).groups()
        how = {None: "exited unexpectedly", "Killed": "was killed (signal 9, often the out-of-memory killer)"}
        what = f"a data worker (pid {pids}) {how.get(signal_name, f'was killed by signal: {signal_name}')}"
        then, tip = "resume", " (fewer data.num_workers or a smaller data.batch_size use less memory)"
    else:
        return None
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return UserError(f"{what}; no checkpoint was saved yet: start the run again{tip}")
    return UserError(
        f"{what}; the last checkpoint saved, {last}, is intact: {then} with `defocus-lit train {cfg.name} "
        f"resume=true`{tip}"
    )


# ----- training -----------------------------------------------------------------------------------------------
def run_training(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train `cfg`. Order: Trainer (checks its arguments), dataset, model, then the run folder as fit starts."""
    from defocus_lit.data.datamodule import DefocusDataModule
    from defocus_lit.models.callbacks import BaselineMetrics, BestMetrics, ValidationImages
    from defocus_lit.models.module import build_module

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir, last = run_folder(cfg)
    if last is not None and not zipfile.is_zipfile(last):  # checked before anything is built or written
        raise unreadable(last, "it ends before the archive's directory, which torch.save writes last")
    if cfg.data.path:  # a given dataset's renderer settings go into the config before the loggers see it
        dataset_path(cfg)
    dry = is_fast_dev_run(cfg)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        monitor="val/psnr",
        mode="max",
        filename="best-epoch{epoch:03d}-psnr{val/psnr:.2f}",
        auto_insert_metric_name=False,
    )
    # last.ckpt after every epoch (with a monitor, Lightning 2.6's save_last only writes it when a new best is saved,
    # so `resume=true` would redo every epoch since the best)
    latest = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False)
    baselines, best = BaselineMetrics(float(cfg.render.max_radius)), BestMetrics()
    writers = [] if dry else [ValidationImages(cfg.logger.num_images), checkpoint, latest]
    slurm_callbacks = [slurm.SlurmAttempt(run_dir, last)] if slurm.job_id() else []
    trainer = build_trainer(cfg, run_dir, [baselines, best, *writers, *callbacks, *slurm_callbacks])
    data_path = dataset_path(cfg)

    datamodule = DefocusDataModule(
        str(data_path),
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        crop_size=cfg.data.crop_size,
        mask_kind=cfg.data.mask_kind,
        pad_multiple=2**cfg.model.num_downs,
        seed=cfg.seed,
        photometric=cfg.data.photometric,
        radius=any(name in READS_RADIUS and weight for name, weight in cfg.loss.terms.items()),
        strength_range=None if cfg.data.strength_range is None else tuple(cfg.data.strength_range),
        unknown_amount=cfg.data.unknown_amount if cfg.model.amount_input else 0.0,
        patch_split=None if cfg.data.patch_split is None else tuple(cfg.data.patch_split),
    )
    module = build_module(cfg)
    if dry:
        trainer.fit(module, datamodule=datamodule)
        return TrainResult(None, None, None, None, dict(best.values) | dict(baselines.values))
    try:
        with writing_run_folder(cfg, run_dir, trainer):
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=last)
            finally:
                if slurm.job_id():
                    slurm.ignore_late_warning()
                if any(isinstance(lg, WandbLogger) for lg in trainer.loggers) and trainer.is_global_zero:
                    import wandb

                    wandb.finish()  # the next run in this process (a sweep trial) gets a W&B run of its own
    except Exception as err:
        fault = fault_error(err, cfg, run_dir)
        if fault is None:
            raise
        raise fault from None

    metrics = dict(best.values) | dict(baselines.values)
    best = Path(checkpoint.best_model_path or latest.best_model_path)
    csv_logger = next(lg for lg in trainer.loggers if isinstance(lg, CSVLogger))
    result = TrainResult(run_dir, best, Path(latest.best_model_path), Path(csv_logger.log_dir) / "metrics.csv", metrics)
    if trainer.is_global_zero:
        summary = {"best_ckpt": str(best), "last_ckpt": str(result.last_ckpt), "metrics": metrics}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return result
