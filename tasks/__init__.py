"""Tasks: one module per task, each holding one ``Task`` subclass registered with ``@register``.

The surface every task provides and its defaults: ``tasks/base.py``. Plumbing shared by every
task (backbone config from preset + variant + width, optimizer and AMP wrapper, hooks):
``tasks/common.py``. Task modules here are discovered: adding ``tasks/foo.py`` is enough.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import TASKS, BenchError, DataError, Task, register  # noqa: F401

_NOT_TASKS = {"base", "common"}


def _discover():
    for m in pkgutil.iter_modules(__path__):
        if m.name not in _NOT_TASKS and not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")


_discover()


def get(name: str) -> Task:
    """The registered task called ``name``; ``BenchError`` naming the known ones otherwise."""
    if name not in TASKS:
        raise BenchError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]
