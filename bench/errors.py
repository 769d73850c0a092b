"""Errors the CLI turns into one clear line and exit code 2 (no traceback). The base and the data
error live on the ground floor (backbones/errors.py); this adds the run-level ones."""
from backbones.errors import BenchError, DataError  # noqa: F401


class TrainingDiverged(BenchError):
    """The loss became NaN/inf; the last good checkpoint is kept."""
