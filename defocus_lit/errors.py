"""The one exception type for bad user input: the CLI prints it as a single `error: ...` line, exit 2; and
`warn` for input that works but probably not as the user meant (one `warning: ...` line)."""

import errno
import os
import sys

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota on it


class UserError(Exception):
    """Bad input from the user (missing file, wrong size, unknown key). Its message names the file or key."""


class DiskFull(UserError):
    """A write to `path` found the disk (or the user's quota) full. Nothing half-written is left at `path`."""

    def __init__(self, path: str | os.PathLike | None, remedy: str = "free space or choose another --out") -> None:
        self.path = path
        super().__init__(f"{path if path is not None else 'a write'}: no space left on device; {remedy}")


def warn(message: str) -> None:
    """One `warning: ...` line on stderr (not `warnings.warn`: its file:line prefix means nothing to a user)."""
    print(f"warning: {message}", file=sys.stderr)
