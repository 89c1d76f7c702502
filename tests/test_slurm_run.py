"""A Slurm job's run folder and the checkpoint a requeued attempt resumes from, with Slurm's variables set by the
test (no Slurm needed; tests/test_slurm.py runs the real thing)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from defocus_lit import slurm
from defocus_lit.config import load_experiment
from defocus_lit.training import run_folder, run_training

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


@pytest.fixture
def job(monkeypatch):
    """Sets this process's Slurm job: job(123) for a first attempt, job(123, restarts=1) after one requeue."""
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)

    def set_job(job_id: int | None, restarts: int | None = None) -> None:
        if job_id is not None:
            monkeypatch.setenv("SLURM_JOB_ID", str(job_id))
        if restarts is not None:
            monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))

    return set_job


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ckpt")
    os.utime(path, (mtime, mtime))
    return path


def config(tmp_path: Path, *words: str):
    return load_experiment("patch_mask", [f"output_dir={tmp_path}", *words], cpu_preset=True)


def test_job_id_attempt_and_run_name_from_the_environment():
    assert slurm.job_id({}) is None and slurm.run_name({}) is None
    assert slurm.job_id({"SLURM_JOB_ID": "42"}) == "42" and slurm.run_name({"SLURM_JOB_ID": "42"}) == "slurm-42"
    array = {"SLURM_JOB_ID": "44", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}
    assert slurm.job_id(array) == "40_3" and slurm.run_name(array) == "slurm-40_3"  # as `scontrol requeue` names it
    assert slurm.attempt({}) == 1 and slurm.attempt({"SLURM_RESTART_COUNT": "0"}) == 1
    assert slurm.attempt({"SLURM_RESTART_COUNT": "2"}) == 3 and slurm.attempt({"SLURM_RESTART_COUNT": ""}) == 1


def test_newest_checkpoint_prefers_the_signal_checkpoint_when_it_is_newer(tmp_path):
    assert slurm.newest_checkpoint(tmp_path) is None
    last = touch(tmp_path / "checkpoints" / "last.ckpt", 1000)
    assert slurm.newest_checkpoint(tmp_path) == last
    hpc1 = touch(tmp_path / "hpc_ckpt_1.ckpt", 2000)  # signalled mid-epoch after that epoch end
    assert slurm.newest_checkpoint(tmp_path) == hpc1
    os.utime(last, (3000, 3000))  # a later attempt got past another epoch end
    assert slurm.newest_checkpoint(tmp_path) == last
    hpc2 = touch(tmp_path / "hpc_ckpt_2.ckpt", 3000)  # same second: the signal's, the highest N
    assert slurm.newest_checkpoint(tmp_path) == hpc2
    touch(tmp_path / "checkpoints" / "best-epoch009-psnr40.00.ckpt", 9000)  # a best checkpoint is no resume point
    assert slurm.newest_checkpoint(tmp_path) == hpc2


def test_outside_slurm_the_run_folder_is_unchanged(tmp_path, job):
    job(None)
    run_dir, ckpt = run_folder(config(tmp_path, "run=mine"))
    assert run_dir == tmp_path / "patch_mask" / "mine" and ckpt is None
    run_dir, ckpt = run_folder(config(tmp_path))
    assert run_dir.parent == tmp_path / "patch_mask" and not run_dir.name.startswith("slurm-") and ckpt is None


def test_a_job_owns_its_run_folder(tmp_path, job):
    other = touch(tmp_path / "patch_mask" / "slurm-7" / "checkpoints" / "last.ckpt", 5000)  # an earlier job's run
    job(123)
    assert run_folder(config(tmp_path)) == (tmp_path / "patch_mask" / "slurm-123", None)
    assert run_folder(config(tmp_path, "run=mine")) == (tmp_path / "patch_mask" / "mine", None)
    # resume=true starts the job from the newest run of the experiment, in the job's own folder
    assert run_folder(config(tmp_path, "resume=true")) == (tmp_path / "patch_mask" / "slurm-123", other)


def test_a_requeued_job_without_a_checkpoint_starts_its_own_run_afresh(tmp_path, job):
    touch(tmp_path / "patch_mask" / "slurm-7" / "checkpoints" / "last.ckpt", 5000)  # newer than anything of ours
    (tmp_path / "patch_mask" / "slurm-123").mkdir(parents=True)  # the first attempt got no further than this
    job(123, restarts=1)
    assert run_folder(config(tmp_path)) == (tmp_path / "patch_mask" / "slurm-123", None)


def test_a_requeued_job_resumes_its_own_run_from_its_newest_checkpoint(tmp_path, job):
    own = tmp_path / "patch_mask" / "slurm-123"
    touch(own / "checkpoints" / "last.ckpt", 1000)
    hpc = touch(own / "hpc_ckpt_1.ckpt", 2000)
    touch(tmp_path / "patch_mask" / "slurm-7" / "checkpoints" / "last.ckpt", 5000)  # another job's, newer
    job(123, restarts=1)
    assert run_folder(config(tmp_path)) == (own, hpc)
    assert run_folder(config(tmp_path, "resume=true")) == (own, hpc)  # its own progress beats the starting point
    job(123, restarts=0)  # a first attempt never picks up checkpoints it did not make
    assert run_folder(config(tmp_path)) == (own, None)


def test_sigterm_ends_an_attempt_with_one_line_and_status_0(tmp_path):
    """What Slurm does to an attempt after Lightning requeued it: SIGTERM to every process of the job."""
    touch(tmp_path / "hpc_ckpt_1.ckpt", 1000)
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from defocus_lit.slurm import SlurmAttempt

        class Trainer:
            is_global_zero, global_step, strategy = True, 21, None

        attempt = SlurmAttempt(Path({str(tmp_path)!r}), None)
        attempt.on_train_start(Trainer(), None)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        print("not stopped")
    """)
    env = {k: v for k, v in os.environ.items() if k not in SLURM_VARS} | {"SLURM_JOB_ID": "123"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"slurm: job 123 attempt 1 starts {tmp_path} from scratch",
        (
            f"slurm: job 123 stopped at global step 21 (SIGTERM: requeued or cancelled); a requeued attempt resumes "
            f"from {tmp_path / 'hpc_ckpt_1.ckpt'}"
        ),
    ]
    assert "Traceback" not in out.stderr


def test_the_requeue_signal_is_handled_by_lightning_at_the_next_batch_end(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setattr(slurm, "_signalled", False)
    calls = []

    class SignalConnector:  # Lightning's, with its requeue handler
        def _slurm_sigusr_handler_fn(self, signum, frame):
            calls.append(signum)

    class Trainer:
        is_global_zero, global_step, strategy, world_size = True, 5, None, 1
        _signal_connector = SignalConnector()

    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        attempt = slurm.SlurmAttempt(tmp_path, None)
        attempt.setup(Trainer(), None, "fit")
        os.kill(os.getpid(), signal.SIGUSR1)  # during start-up: marked, not fatal
        attempt.on_train_start(Trainer(), None)
        assert calls == []  # not inside the signal handler: mid-step under DDP that deadlocks
        attempt.on_train_batch_end(Trainer(), None, None, None, 0)
        assert calls == [signal.SIGUSR1]
        attempt.on_train_batch_end(Trainer(), None, None, None, 1)
        assert calls == [signal.SIGUSR1]  # once
        os.kill(os.getpid(), signal.SIGUSR1)  # after training (Lightning restores this handler): harmless
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_only_rank_0_prints_the_summary(tmp_path, monkeypatch, capsys):
    from defocus_lit.commands import train
    from defocus_lit.training import TrainResult

    result = TrainResult(
        tmp_path, tmp_path / "best.ckpt", tmp_path / "last.ckpt", tmp_path / "m.csv", {"val/psnr": 30.0}
    )
    monkeypatch.setattr(train, "run_training", lambda cfg: result)
    args = type("Args", (), {"experiment": "patch_mask", "overrides": [f"output_dir={tmp_path}"]})
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert train.run(args) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert train.run(args) == 0
    assert "summary: val/psnr=30" in capsys.readouterr().out


def test_dataloader_workers_ignore_the_requeue_signal():
    """Slurm signals every process of the job; a worker must not run the training process's requeue handler."""
    from defocus_lit.data.datamodule import seed_worker

    saved = signal.getsignal(signal.SIGUSR1)
    try:
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # as Lightning sets it before workers fork
        seed_worker(0)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, saved)


def test_a_warning_signal_after_training_does_not_kill_the_job(tiny, monkeypatch):
    """Lightning restores SIGUSR1's default action (terminate) when fit ends; a job still finishing when Slurm's
    warning arrives must survive it (run_training ignores it under Slurm)."""
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        run_training(load_experiment("pix2pix_4ch", tiny, cpu_preset=True))
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGUSR1)  # ignored: the test process lives on
    finally:
        signal.signal(signal.SIGUSR1, previous)
