"""Faults of shared machines (docs/reliability.md): a full disk, a killed data worker, a truncated file, two
writers of one path. Each ends in one `error:` line naming the file, and nothing complete before it is lost.

The full-disk tests write to a small tmpfs they mount, so they run as root (as in CI) and are skipped elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from defocus_lit.cli import main
from defocus_lit.config import load_experiment
from defocus_lit.data.build import build_dataset
from defocus_lit.data.hdf5 import read_info
from defocus_lit.data.sources import open_source
from defocus_lit.render import RenderSettings
from defocus_lit.training import fault_error, run_training

CLI = [sys.executable, "-m", "defocus_lit.cli"]
FAST = RenderSettings(layers=4, max_radius=4.0)
BUILD = ["data", "build", "--source", "synthetic", "--layers", "4", "--max-radius", "4", "--quiet", "--workers", "0"]


# ----- helpers ------------------------------------------------------------------------------------------------
@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    """A 4 MB tmpfs mounted for the test (root only; skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Take the disk's free space but `leave` bytes."""
    stat = os.statvfs(disk)
    with open(disk / "filler", "ab") as file:
        file.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave, 0))


def one_error(err: str) -> str:
    """The only `error:` line of a command's stderr, which has no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name != ".lock"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tiny_checkpoint) -> Path:
    return next((tiny_checkpoint.parent / "data").glob("*.h5"))


def data_workers(pid: int) -> list[int]:
    """The DataLoader workers of process `pid`: its children forked from it (the same command line; not, say,
    multiprocessing's resource tracker)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            same = (proc / "cmdline").read_bytes() == Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        if parent == pid and same:
            found.append(int(proc.name))
    return found


class StartStep(L.Callback):
    """The global step a run's training starts at (a resumed run: its checkpoint's)."""

    step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step = trainer.global_step


def start_training(words: list[str], cwd: Path, last: Path) -> subprocess.Popen:
    """A long `train` in another process, returned once it has written `last` (its first last.ckpt)."""
    proc = subprocess.Popen(
        [*CLI, "train", "pix2pix_4ch", *words, "trainer.max_epochs=1000"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600  # only a bound on a hang: a run writes last.ckpt within seconds
    while not last.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(proc.communicate()[1][-3000:])
        time.sleep(0.2)
    return proc


# ----- a full disk --------------------------------------------------------------------------------------------
def test_full_disk_in_data_build_keeps_the_finished_dataset(disk, tmp_path):
    """HDF5 crashed (segmentation fault) closing a file whose write had failed, so the failing build runs in a
    process of its own; now: one line, no temporary, the earlier dataset as it was."""
    out = disk / "d.h5"
    build_dataset(open_source("synthetic", num=2, size=(32, 32)), out, settings=FAST, progress=False, workers=0)
    before = out.read_bytes()
    fill(disk, leave=64 * 1024)
    run = [*CLI, *BUILD, "--num", "4", "--size", "64x64", "--out", str(out)]
    failed = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert one_error(failed.stderr) == f"error: {out}: no space left on device; free space or choose another --out"
    assert temporaries(disk) == [] and out.read_bytes() == before


SIGNAL_WHILE_HDF5_WRITES = """
import os, signal, sys
from defocus_lit import io
from defocus_lit.cli import main

write = io.WriteErrorsKept.write

def signalled(self, data):  # SIGTERM inside HDF5's call back into Python, as a signal may land
    if not io.__dict__.setdefault("signalled", False):
        io.signalled = True
        os.kill(os.getpid(), signal.SIGTERM)
    return write(self, data)

io.WriteErrorsKept.write = signalled
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_while_hdf5_writes_stops_the_build_cleanly(tmp_path):
    """HDF5 writes through Python (`WriteErrorsKept`); a signal's KeyboardInterrupt raised in there would leave
    HDF5 to crash closing the file, so it is raised after the write: status 130, nothing left."""
    argv = [*BUILD, "--num", "2", "--size", "32x32", "--out", str(tmp_path / "d.h5")]
    stopped = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_HDF5_WRITES, *argv], capture_output=True, text=True)
    assert stopped.returncode == 130 and stopped.stderr.strip().endswith("interrupted"), stopped.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []


def test_full_disk_in_training_keeps_last_ckpt_and_resumes(disk, tiny, capsys):
    """A checkpoint save that does not fit stops the run with one line; the earlier last.ckpt stays as it was (the
    failed run itself resumed from it and trained an epoch) and no partial checkpoint is left. Lightning's own
    save copied the file in from the system's temporary folder, leaving a cut-short .ckpt on the full disk.

    The first part runs without validation, so it saves only last.ckpt and the second part's first save is a new
    file, the best checkpoint; the second part draws no image, so that save is the first write that cannot fit."""
    words = [*tiny, f"output_dir={disk}", "cpu_preset=true", "run=r"]
    assert main(["train", "pix2pix_4ch", *words, "trainer.limit_val_batches=0"]) == 0
    checkpoints = disk / "pix2pix_4ch" / "r" / "checkpoints"
    before = snapshot(checkpoints)
    assert list(before) == ["last.ckpt"]
    capsys.readouterr()
    fill(disk, leave=32 * 1024)  # room for the logs, not for a checkpoint
    assert main(["train", "pix2pix_4ch", *words, "resume=true", "trainer.max_epochs=2", "logger.num_images=0"]) == 2
    error = one_error(capsys.readouterr().err)
    assert ".ckpt: no space left on device" in error and "last.ckpt, is intact" in error and "resume=true" in error
    assert snapshot(checkpoints) == before and temporaries(disk) == []


def test_full_disk_in_predict_on_a_folder_stops_and_keeps_the_outputs(disk, tiny_checkpoint, tmp_path, capsys):
    """Every image used to fail in turn with a traceback; now the first failure stops the command."""
    photos, masks, out = tmp_path / "photos", tmp_path / "masks", disk / "out"
    photos.mkdir(), masks.mkdir()
    rng = np.random.default_rng(0)
    mask = np.full((32, 32), 255, np.uint8)
    mask[:, :16] = 0
    for name in "abc":
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(photos / f"{name}.png")
        Image.fromarray(mask).save(masks / f"{name}.png")
    args = ["predict", "--ckpt", str(tiny_checkpoint), "--image", str(photos), "--mask", str(masks), "--out", str(out)]
    assert main(args) == 0
    before = snapshot(out)
    capsys.readouterr()
    fill(disk)
    assert main(args) == 2
    assert one_error(capsys.readouterr().err).startswith(f"error: {out / 'a.png'}: no space left on device")
    assert snapshot(out) == before and temporaries(disk) == []


def test_full_disk_in_evaluate_keeps_the_previous_report(disk, dataset, capsys):
    out = disk / "report"
    args = ["evaluate", "--baseline", "identity", "--data", str(dataset), "--limit", "2", "--out", str(out)]
    assert main(args) == 0
    before = snapshot(out)
    capsys.readouterr()
    fill(disk, leave=8 * 1024)
    assert main([*args[:-4], "--limit", "4", "--out", str(out)]) == 2
    assert one_error(capsys.readouterr().err).startswith(f"error: {out}: no space left on device")
    assert snapshot(out) == before and temporaries(disk) == []


def test_full_disk_in_export_keeps_the_previous_file(disk, tiny_checkpoint):
    """torch's own file writer aborted the process (C++ terminate) on a full disk; now one line, the earlier file
    as it was."""
    out = disk / "defocuser.pt"
    args = ["export", "--ckpt", str(tiny_checkpoint), "--format", "torchscript", "--out", str(out)]
    assert main(args) == 0
    before = out.read_bytes()
    fill(disk, leave=8 * 1024)
    failed = subprocess.run([*CLI, *args], capture_output=True, text=True)  # in a process of its own, as it aborted
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert one_error(failed.stderr).startswith(f"error: {out}: no space left on device")
    assert out.read_bytes() == before and temporaries(disk) == []
    torch.jit.load(str(out))


# ----- truncated files ----------------------------------------------------------------------------------------
def cut_short(path: Path, copy: Path) -> Path:
    """`copy`: the first half of `path`, as a copy that did not finish."""
    copy.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return copy


@pytest.mark.parametrize(
    "command",
    [
        "data info {h5}",
        "evaluate --baseline identity --data {h5} --out {tmp}/report",
        "train pix2pix_4ch data.path={h5}",
        "predict --ckpt {ckpt} --image {tmp}/p.png --mask {tmp}/m.png --out {tmp}/o.png",
        "evaluate --ckpt {ckpt} --data {dataset} --out {tmp}/report",
        "export --ckpt {ckpt} --format torchscript --out {tmp}/m.pt",
        "demo --ckpt {ckpt}",
        "train pix2pix_4ch resume={ckpt}",
        "train pix2pix_4ch resume=true",
    ],
)
def test_a_truncated_file_is_one_error_naming_it(command, tiny, tiny_checkpoint, dataset, tmp_path, capsys):
    run_dir = tmp_path / "outputs" / "pix2pix_4ch" / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = cut_short(tiny_checkpoint, run_dir / "checkpoints" / "last.ckpt")  # what resume=true finds
    h5 = cut_short(dataset, tmp_path / "cut.h5")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "p.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "m.png")
    words = command.format(h5=h5, ckpt=ckpt, dataset=dataset, tmp=tmp_path).split()
    if words[0] == "train":
        words += [*tiny, "cpu_preset=true"]
    assert main(words) == 2
    named = h5 if "{h5}" in command else ckpt
    assert one_error(capsys.readouterr().err).startswith(f"error: {named}: ")
    assert not {"report", "o.png", "m.pt", "data"} & {p.name for p in tmp_path.iterdir()}
    assert [p.name for p in run_dir.rglob("*")] == ["checkpoints", "last.ckpt"]  # nothing written beside it


# ----- two writers --------------------------------------------------------------------------------------------
def test_two_data_builds_to_one_path_leave_one_complete_dataset(tmp_path):
    """A second build starts while the first is writing: each writes its own temporary and renames it when
    complete, so both succeed and the file is one of the two datasets, whole."""
    out = tmp_path / "d.h5"
    argv = [*CLI, *BUILD, "--num", "12", "--size", "32x32", "--out", str(out)]
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not temporaries(tmp_path):  # the first is writing
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.05)
    build_dataset(open_source("synthetic", num=4, size=(32, 32)), out, settings=FAST, progress=False, workers=0)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    assert read_info(out)["source_frames"] in (4, 12)
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


def test_a_worker_death_is_found_behind_an_error_raised_on_the_way_out(tmp_path):
    """torch raises the worker's death wherever the main process is when the signal comes; an error raised while
    handling it (a teardown, a hook) must not hide it."""
    cfg = load_experiment("pix2pix_4ch", [], cpu_preset=True)
    try:
        try:
            raise RuntimeError("DataLoader worker (pid 4321) is killed by signal: Killed. ")
        except RuntimeError:
            raise ValueError("a teardown that failed too")  # noqa: B904 (as library code raises it)
    except ValueError as err:
        fault = fault_error(err, cfg, tmp_path)
    assert str(fault).startswith("a data worker (pid 4321) was killed (signal 9")


def test_a_second_training_of_a_run_stops_and_a_killed_data_worker_is_one_line(tiny, tmp_path, capsys):
    """Two trainings of one run=NAME: the second stops before writing anything, naming the first. Then SIGKILL to
    a data worker of the first (as the out-of-memory killer sends) stops it with one line saying so and how to
    resume, not torch's traceback; last.ckpt is complete and `resume=true` continues from it. (A run killed with
    SIGKILL leaves no lock behind: tests/test_train.py, the kill -9 test, resumes after one.)"""
    run_dir = tmp_path / "outputs" / "pix2pix_4ch" / "x"
    last = run_dir / "checkpoints" / "last.ckpt"
    words = [*tiny, "cpu_preset=true", "run=x"]
    proc = start_training([*words, "data.num_workers=1"], tmp_path, last)
    try:
        config = (run_dir / "config.yaml").read_bytes()
        assert main(["train", "pix2pix_4ch", *words]) == 2
        error = one_error(capsys.readouterr().err)
        assert error.startswith(f"error: {run_dir}: in use by pid {proc.pid} on host ")
        assert error.endswith("wait for that training to end, or choose another run=NAME")
        assert (run_dir / "config.yaml").read_bytes() == config and proc.poll() is None
        worker = data_workers(proc.pid)[0]
        os.kill(worker, signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 2, err[-3000:]
    error = one_error(err)
    # torch names the signal when its SIGCHLD handler sees the death first, not when a wait for a batch times out
    reports = ("was killed (signal 9, often the out-of-memory killer)", "exited unexpectedly")
    assert any(error.startswith(f"error: a data worker (pid {worker}) {how};") for how in reports), error
    assert "last.ckpt, is intact: resume with `defocus-lit train pix2pix_4ch resume=true`" in error
    killed = torch.load(last, weights_only=False)
    resume = [*words, "resume=true", f"trainer.max_epochs={killed['epoch'] + 2}"]
    start = StartStep()
    result = run_training(load_experiment("pix2pix_4ch", resume, cpu_preset=True), callbacks=[start])
    assert start.step == killed["global_step"] and result.last_ckpt == last
    assert torch.load(last, weights_only=False)["epoch"] == killed["epoch"] + 1


def test_a_worker_reported_gone_while_waiting_for_a_batch_keeps_the_signal(tmp_path):
    """torch's wait for a batch reports "exited unexpectedly" raised from the SIGCHLD handler's report, which names
    the signal: the line says what killed it."""
    cfg = load_experiment("pix2pix_4ch", [], cpu_preset=True)
    try:
        try:
            raise RuntimeError("DataLoader worker (pid 4321) is killed by signal: Killed. ")
        except RuntimeError as handler_report:
            raise RuntimeError("DataLoader worker (pid(s) 4321) exited unexpectedly") from handler_report
    except RuntimeError as err:
        fault = fault_error(err, cfg, tmp_path)
    assert str(fault).startswith("a data worker (pid 4321) was killed (signal 9")
