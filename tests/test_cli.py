from __future__ import annotations

import errno
import importlib
import subprocess
import sys

import pytest

from defocus_lit.cli import main


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`defocus-lit ... | head`: stdout closed before the command writes is exit 141 (as SIGPIPE), no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "defocus_lit.cli", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == ""


@pytest.mark.parametrize("raised", ["oserror", "raised_while_handling_it"])
def test_a_full_disk_no_atomic_write_caught_is_one_error_line(raised, monkeypatch, capsys):
    """The last resort for a write outside `atomic_path` (a log, a JSON summary): one line naming the file, exit 2;
    also when a library raised its own error after the failed write (torch does)."""

    def full(args):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "out/summary.json")
        except OSError:
            if raised == "oserror":
                raise
            raise RuntimeError("unexpected pos 576 vs 534")  # noqa: B904 (as torch raises it)

    monkeypatch.setattr(importlib.import_module("defocus_lit.commands.bench"), "run", full)
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert err == "error: out/summary.json: no space left on device; free space or choose another --out\n"
