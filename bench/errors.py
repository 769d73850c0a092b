"""Errors the CLI turns into one clear line and exit code 2 (no traceback). The user-facing base
and the data error live with the task surface (tasks/base.py), where tasks raise them."""
from tasks.base import BenchError, DataError  # noqa: F401


class TrainingDiverged(BenchError):
    """The loss became NaN/inf; the last good checkpoint is kept."""
