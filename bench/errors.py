"""Errors the CLI turns into one clear line and a non-zero exit (no traceback)."""


class BenchError(Exception):
    """A user-facing problem: bad input, bad option, a run that cannot go on."""


class DataError(BenchError):
    """A dataset is missing or malformed; the message names the file and what was expected."""


class TrainingDiverged(BenchError):
    """The loss became NaN/inf; the last good checkpoint is kept."""
