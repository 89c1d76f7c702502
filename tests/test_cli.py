from __future__ import annotations

import subprocess
import sys


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`defocus-lit ... | head`: stdout closed before the command writes is exit 141 (as SIGPIPE), no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "defocus_lit.cli", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == ""
