"""The one exception type for bad user input: the CLI prints it as a single `error: ...` line, exit 2; and
`warn` for input that works but probably not as the user meant (one `warning: ...` line)."""

import sys


class UserError(Exception):
    """Bad input from the user (missing file, wrong size, unknown key). Its message names the file or key."""


def warn(message: str) -> None:
    """One `warning: ...` line on stderr (not `warnings.warn`: its file:line prefix means nothing to a user)."""
    print(f"warning: {message}", file=sys.stderr)
