"""The one exception type for bad user input: the CLI prints it as a single `error: ...` line, exit 2."""


class UserError(Exception):
    """Bad input from the user (missing file, wrong size, unknown key). Its message names the file or key."""
