"""The suite's user-facing errors, on the ground floor so every layer (backbones, tasks, bench) can
raise them without importing upward. The CLI turns a ``BenchError`` into one line and exit code 2."""


class BenchError(Exception):
    """A user-facing problem: bad input, bad option, a run that cannot go on (one line, exit 2)."""


class DataError(BenchError):
    """A dataset is missing or malformed; the message names the file and what was expected."""
