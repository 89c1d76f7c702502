"""Cluster jobs under a real one-node Slurm, as `.ci/slurm.sh` starts it (skipped elsewhere).

From a fresh clone: the README's CPU-partition form of experiments/slurm/train.sbatch trains with 2 DDP ranks and
leaves a checkpoint; a job whose time limit signals it mid-epoch is requeued by Lightning and its second attempt
resumes its own run from the signal's hpc_ckpt_N.ckpt, the step count continuing, its log holding both attempts.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
CLUSTER_ENV = "DEFOCUS_LIT_SLURM_TMP"  # set by .ci/slurm.sh once its cluster answers


# Only .ci/slurm.sh runs these tests (never a cluster of yours that `sinfo` happens to answer for); once it has set
# CLUSTER_ENV, a cluster that does not answer is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not os.environ.get(CLUSTER_ENV),
    reason="needs the one-node Slurm cluster that "
    ".ci/slurm.sh starts (it installs slurm-wlm and munge with apt-get, then runs this file)",
)

# The README's CPU-partition form: these flags replace the script's GPU ones.
CPU_FORM = ["--gres=none", "--ntasks-per-node=2", "--cpus-per-task=1"]
CPU_WORDS = ["trainer.accelerator=cpu"]
# A tiny run: 24 synthetic frames of 64x64, a small U-Net; about 12 s an epoch on 2 CPU cores.
TINY = [
    "logger.wandb=disabled",
    "data.synthetic.num=24",
    "data.synthetic.size=[64,64]",
    "data.crop_size=64",
    "render.layers=8",
    "model.ngf=8",
    "model.ndf=8",
    "model.num_downs=5",
    "data.batch_size=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "loss.gan_weight=1",  # the full pix2pix step (D too, as on a GPU), whatever the CPU preset says
]
DONE = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
)


_terminal = []  # pytest's capture manager and terminal reporter


@pytest.fixture(scope="module", autouse=True)
def _reporter(request):
    plugins = request.config.pluginmanager
    _terminal[:] = [plugins.get_plugin("capturemanager"), plugins.get_plugin("terminalreporter")]


def progress(line: str) -> None:
    """A line on the terminal as the test goes (job logs are printed only for a failed test)."""
    capture, reporter = _terminal or (None, None)
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"    {line}")


@pytest.fixture(scope="module")
def clone() -> Path:
    """A fresh clone of this repository's HEAD, its .venv a link to the one already built."""
    path = Path(os.environ[CLUSTER_ENV]) / "clone"
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True)
    venv = Path(os.environ.get("VENV", REPO / ".venv")).resolve()
    (path / ".venv").symlink_to(venv)
    return path


def _memory_flag() -> str:
    """--mem=8G as in the README, or the whole node where it has less."""
    node = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True, check=True).stdout
    real = int(re.search(r"RealMemory=(\d+)", node).group(1))
    return f"--mem={min(8192, real)}M"


def _job_env(clone: Path) -> dict[str, str]:
    """The submitting shell's environment, with the clone's package first on the path (the linked .venv holds an
    editable install of the repository the clone came from) and no W&B or pytest settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "PYTEST_", "SLURM_JOB"))}
    env["PYTHONPATH"] = str(clone)
    return env


def sbatch(clone: Path, flags: list[str], words: list[str]) -> str:
    cmd = ["sbatch", "--parsable", *flags, "experiments/slurm/train.sbatch", "patch_mask", *words]
    out = subprocess.run(cmd, cwd=clone, env=_job_env(clone), capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stderr}"
    job = out.stdout.strip().split(";")[0]
    progress(f"submitted job {job}: sbatch {' '.join(cmd[2:])}")
    return job


def job_info(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(job: str, done, timeout: float, what: str) -> dict[str, str]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        info = job_info(job)
        if done(info):
            progress(f"job {job}: {what} after {time.monotonic() - start:.0f} s ({info['JobState']})")
            return info
        if info["JobState"] in DONE:
            break
        time.sleep(2)
    raise AssertionError(f"job {job}: not {what} within {timeout:.0f} s: {info}")


def job_log(clone: Path, job: str) -> str:
    return (clone / f"slurm-defocus_lit-{job}.out").read_text()


def metric_rows(metrics_csv: Path, column: str) -> list[dict]:
    with open(metrics_csv) as f:
        return [row for row in csv.DictReader(f) if row.get(column)]


def train_steps(metrics_csv: Path) -> list[int]:
    """The batch counts (Lightning's logged `step`) of the per-batch training rows."""
    return [int(row["step"]) for row in metric_rows(metrics_csv, "train/loss_g_step")]


def last_validation(metrics_csv: Path) -> tuple[int, int]:
    """(epoch, step) of the last validation row. (`last.ckpt` is no witness: Lightning 2.6 rewrites it only when a
    best checkpoint is saved.)"""
    row = metric_rows(metrics_csv, "val/psnr")[-1]
    return int(row["epoch"]), int(row["step"])


def global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


def check_clean(log: str) -> None:
    for bad in ("Traceback", "Exited with exit code", "Connection lost", "Error"):
        assert bad not in log, f"'{bad}' in the job's log:\n{log}"


@pytest.fixture(scope="module")
def completed_job(clone: Path) -> tuple[str, int]:
    """The README's CPU form, 2 epochs; its job id and its batches per epoch (per rank)."""
    job = sbatch(clone, [*CPU_FORM, _memory_flag()], [*CPU_WORDS, *TINY, "trainer.max_epochs=2"])
    info = wait_for(job, lambda i: i["JobState"] in DONE, 600, "finished")
    log = job_log(clone, job)
    print(log)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", info
    run = clone / "outputs" / "patch_mask" / f"slurm-{job}"
    assert (run / "checkpoints" / "last.ckpt").is_file(), f"no checkpoint in {run}"
    epoch, step = last_validation(run / "csv" / "metrics.csv")
    assert epoch == 1
    return job, (step + 1) // 2


def test_readme_cpu_form_trains_with_two_ranks_from_a_fresh_clone(clone, completed_job):
    job, batches_per_epoch = completed_job
    log = job_log(clone, job)
    assert f"job {job} attempt 1 " in log
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log, "not 2 DDP ranks"
    assert log.count("summary: ") == 1, "the summary is printed by rank 0 only"
    check_clean(log)
    run = clone / "outputs" / "patch_mask" / f"slurm-{job}"
    assert list((run / "checkpoints").glob("best-*.ckpt")) and (run / "summary.json").is_file()
    assert batches_per_epoch > 0
    progress(f"job {job}: 2 ranks, checkpoints in {run.relative_to(clone)}, summary once, no traceback")


def test_signalled_job_is_requeued_and_resumes_its_own_run(clone, completed_job):
    _, batches_per_epoch = completed_job
    # The script's own --signal=SIGUSR1@90 with a 3-minute limit: the signal comes 60-90 s after the start, some
    # 20-50 s into training, and 150 epochs (1.3-4 s each with 2 ranks on 2 cores, idle to loaded) last beyond it.
    epochs = 150
    job = sbatch(
        clone,
        [*CPU_FORM, _memory_flag(), "--time=3"],
        [*CPU_WORDS, *TINY, "logger.wandb=offline", f"trainer.max_epochs={epochs}"],
    )
    wait_for(job, lambda i: int(i.get("Restarts", 0)) >= 1, 300, "requeued")
    # the second attempt would be signalled again at the same point; give it the time to finish instead
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=15"], check=True)
    progress(f"job {job}: time limit raised to 15 minutes for attempt 2")
    info = wait_for(job, lambda i: i["JobState"] in DONE, 600, "finished")
    log = job_log(clone, job)
    print(log)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", info

    # the log holds both attempts: appended, not truncated
    assert f"job {job} attempt 1 " in log and f"job {job} attempt 2 " in log
    check_clean(log)
    assert log.count("summary: ") == 1, "the summary is printed once, by rank 0 of the last attempt"
    assert len(re.findall(r"^slurm: job \d+ stopped", log, re.MULTILINE)) == 1, "one line for the requeue"

    run = clone / "outputs" / "patch_mask" / f"slurm-{job}"
    hpc = run / "hpc_ckpt_1.ckpt"
    assert hpc.is_file(), f"Lightning saved no checkpoint at the signal in {run}"
    hpc_step = global_step(hpc)
    resumed = re.search(r"^slurm: job \d+ attempt 2 resumes (\S+) from (\S+) at global step (\d+)", log, re.MULTILINE)
    assert resumed, "the second attempt did not resume"
    assert (clone / resumed.group(1)).resolve() == run.resolve(), "resumed another run"  # paths relative to clone
    assert Path(resumed.group(2)).name == hpc.name and int(resumed.group(3)) == hpc_step
    mid_epoch = (hpc_step // 2) % batches_per_epoch != 0  # a GAN batch is 2 optimizer steps
    progress(
        f"job {job}: checkpoint at the signal: global step {hpc_step} "
        f"({'mid-epoch' if mid_epoch else 'at an epoch end'}); attempt 2 resumed there"
    )

    first, second = train_steps(run / "csv" / "metrics.csv"), train_steps(run / "csv_resume1" / "metrics.csv")
    assert first and second
    assert min(second) >= max(first), (
        f"steps went back: attempt 1 logged up to {max(first)}, attempt 2 from {min(second)}"
    )
    # the run ends where an uninterrupted one would: no epoch lost or repeated
    assert last_validation(run / "csv_resume1" / "metrics.csv") == (epochs - 1, epochs * batches_per_epoch - 1)
    assert (run / "summary.json").is_file()
    progress(
        f"job {job}: both attempts in one log, batches {max(first)} -> {min(second)}, ended at epoch "
        f"{epochs - 1} batch {epochs * batches_per_epoch - 1} as planned, one requeue line, summary once"
    )
