"""Atomic file writes, the one implementation: checkpoints (through mmengine's file backend),
records, tables and plots all go through ``AtomicFile``."""
from __future__ import annotations

import os
import tempfile


class AtomicFile:
    """``with AtomicFile(path) as f: f.write(...)``: the bytes go to a temporary file in the same
    folder, which is fsynced and renamed over ``path`` when the block ends; on any error it is removed
    and ``path`` keeps what it held. The temporary file is made here, so an unwritable folder fails
    at construction (an ``OSError``), before anything is written."""

    def __init__(self, path, mode: int = 0o644):
        self.path, self.mode = os.fspath(path), mode
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp")
        self.file = os.fdopen(fd, "wb")

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if exc_type is None:
                os.chmod(self.tmp, self.mode)  # mkstemp makes 0600; results are meant to be shared
                os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
        return False
