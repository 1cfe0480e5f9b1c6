"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class VivitError(Exception):
    """Bad input from the user: a config key, a path, a file. Never a bug in the toolkit."""

    exit_code = 2
