"""Slurm jobs that own their run and survive requeue, on top of Lightning's own SLURM support.

Under Slurm, Lightning's `SLURMEnvironment` (auto-requeue on, its default) catches the job's warning signal
(`--signal=SIGUSR1@90`), saves `RUN/hpc_ckpt_N.ckpt` and requeues the job with `scontrol requeue`; Slurm then
stops the attempt with SIGTERM and later runs the batch script again with SLURM_RESTART_COUNT raised. On top of
that, this module

- names the job's run folder from the job (`slurm-JOBID`, `slurm-ARRAYJOB_TASK` for an array task),
- picks the checkpoint a requeued attempt resumes from: the newest of its own run's `checkpoints/last.ckpt` and
  `hpc_ckpt_N.ckpt` (none yet: the attempt starts its run afresh),
- runs Lightning's requeue handler at a batch end on all ranks together rather than inside the signal handler,
  where under DDP its checkpoint's collective calls deadlock against a rank in a gradient all-reduce (and the
  signal, from the start of fit on, no longer kills a process that has no handler for it yet),
- ends an attempt stopped by SIGTERM with one line and exit status 0 instead of the tracebacks of every process.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback

HPC_CKPT = re.compile(r"hpc_ckpt_(\d+)\.ckpt$")
_signalled = False  # the job's warning signal has reached this process (set by _mark)


def job_id(env: Mapping[str, str] = os.environ) -> str | None:
    """This process's Slurm job as `scontrol requeue` names it: JOBID, or ARRAYJOB_TASK for an array task."""
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID") or None


def attempt(env: Mapping[str, str] = os.environ) -> int:
    """1 for a job's first run, 2 after its first requeue, ... (Slurm's SLURM_RESTART_COUNT + 1)."""
    count = env.get("SLURM_RESTART_COUNT", "")
    return int(count) + 1 if count.isdigit() else 1


def run_name(env: Mapping[str, str] = os.environ) -> str | None:
    """The run folder a Slurm job owns, `slurm-JOBID`; None outside Slurm."""
    job = job_id(env)
    return f"slurm-{job}" if job else None


def _hpc_number(path: Path) -> int:
    match = HPC_CKPT.search(path.name)
    return int(match.group(1)) if match else -1


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a run continues from: the newest (by time written) of `checkpoints/last.ckpt` and Lightning's
    `hpc_ckpt_N.ckpt` (saved at the job's signal, mid-epoch); on a tie the signal's, the highest N. None if the run
    has neither."""
    found = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, _hpc_number(p)))


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of its job, from the launcher's variables (before Lightning knows its rank)."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def _say(line: str) -> None:
    """One line on stdout that is safe inside a signal handler (no buffered print that the handler interrupted)."""
    try:
        sys.stdout.flush()
    except (OSError, RuntimeError, ValueError):
        pass
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def _mark(signum, frame) -> None:  # noqa: ARG001
    global _signalled
    _signalled = True


class SlurmAttempt(Callback):
    """One attempt of a Slurm job: says where it resumed, requeues at a batch end, ends quietly when Slurm stops it.

    The job's warning signal (SIGUSR1) only marks the process, from the start of fit (`setup`) on, and so for good:
    a signal during start-up, validation or after training no longer kills it (the default action). At the end of
    the next training batch every rank runs Lightning's own requeue handler together (checkpoint
    `RUN/hpc_ckpt_N.ckpt`, then `scontrol requeue` on rank 0). Run inside the signal handler, as Lightning does
    itself, that checkpoint's collective calls meet a rank blocked in a gradient all-reduce under DDP and both wait
    forever. (Lightning leaves a signal that already has a handler alone, so it registers no handler of its own.)

    When Slurm stops the attempt (SIGTERM: the job was requeued, or cancelled), rank 0 prints one line naming the
    checkpoint the next attempt resumes from and every process exits with status 0 at once: no traceback from a
    DataLoader worker killed by the same signal, from a W&B connection or a DDP peer that went away, and no
    failed-task line from srun.
    """

    def __init__(self, run_dir: Path, ckpt: Path | None) -> None:
        self.run_dir, self.ckpt = run_dir, ckpt
        self.job = job_id()
        self._trainer = None
        self._requeued = False

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ARG002
        if stage == "fit":
            signal.signal(signal.SIGUSR1, _mark)

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ARG002
        if trainer.is_global_zero:
            where = f"from {self.ckpt} at global step {trainer.global_step}" if self.ckpt else "from scratch"
            verb = "resumes" if self.ckpt else "starts"
            print(f"slurm: job {self.job} attempt {attempt()} {verb} {self.run_dir} {where}", flush=True)
        self._trainer = trainer
        # Lightning registers its SIGTERM handler just before training (and restores the earlier one after fit)
        signal.signal(signal.SIGTERM, self._stopped)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ARG002
        global _signalled
        env = getattr(trainer.strategy, "cluster_environment", None)
        if self._requeued or (isinstance(env, SLURMEnvironment) and not env.auto_requeue):
            return
        signalled = _signalled
        if trainer.world_size > 1:
            signalled = trainer.strategy.reduce_boolean_decision(signalled, all=False)
        if signalled:
            self._requeued, _signalled = True, False
            # saves RUN/hpc_ckpt_N.ckpt (every rank), then rank 0 runs `scontrol requeue`
            trainer._signal_connector._slurm_sigusr_handler_fn(signal.SIGUSR1, None)

    def _stopped(self, signum, frame) -> None:  # noqa: ARG002
        if is_rank_zero():
            step = self._trainer.global_step if self._trainer is not None else "?"
            newest = newest_checkpoint(self.run_dir)
            then = f"a requeued attempt resumes from {newest}" if newest else "a requeued attempt starts afresh"
            _say(f"slurm: job {self.job} stopped at global step {step} (SIGTERM: requeued or cancelled); {then}")
        os._exit(0)


def ignore_late_warning() -> None:
    """After training the job's warning signal (SIGUSR1) has nothing left to save: ignore it. Lightning restores the
    default handler when fit ends, whose action kills a job that is finishing (its last lines, W&B) and has Slurm
    record it as failed."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
