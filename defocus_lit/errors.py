"""The one exception type for bad user input, and its kind for a full disk: the CLI prints either as a single
`error: ...` line, exit 2; and `warn` for input that works but probably not as the user meant (one `warning: ...`
line)."""

import errno
import os
import sys
from collections.abc import Iterator

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota on it


class UserError(Exception):
    """Bad input from the user (missing file, wrong size, unknown key). Its message names the file or key."""


class DiskFull(UserError):
    """A write to `path` (None: unknown) found the disk, or the user's quota on it, full."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = path
        super().__init__(
            f"{'' if path is None else f'{path}: '}no space left on device; free space or choose another --out"
        )


def error_chain(err: BaseException | None) -> Iterator[BaseException]:
    """`err`, then the error it was raised from or while handling, and so on: a fault of the machine is often the
    first link, another error raised on the way out the last."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        yield err
        seen.add(id(err))
        err = err.__cause__ or err.__context__


def disk_full(err: BaseException) -> DiskFull | None:
    """`err` as DiskFull when it, or an error it was raised from or while handling, is a write to a full disk or
    quota (torch raises its own error after a failed write), naming the file where the OSError does; else None."""
    for link in error_chain(err):
        if isinstance(link, DiskFull):
            return link
        if isinstance(link, OSError) and link.errno in NO_SPACE:
            return DiskFull(link.filename)
    return None


def warn(message: str) -> None:
    """One `warning: ...` line on stderr (not `warnings.warn`: its file:line prefix means nothing to a user)."""
    print(f"warning: {message}", file=sys.stderr)
