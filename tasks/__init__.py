"""Tasks: one module per task, each holding one ``Task`` subclass registered with ``@register``,
its ``NAME`` the module's own name.

The surface every task provides and its defaults: ``tasks/base.py``. Plumbing shared by every
task (backbone config from preset + variant + width, optimizer and AMP wrapper, hooks):
``tasks/common.py``. Task modules here are discovered: adding ``tasks/foo.py`` (or a package
``tasks/foo/``) is enough. A task's module is imported when the task is first asked for, so the
command line lists and parses without loading any task's code.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import BenchError, DataError, Task, register  # noqa: F401

_NOT_TASKS = {"base", "common", "recipes"}


def names() -> list[str]:
    """Every task's name, sorted: the task modules' names (nothing is imported) and any task
    registered from elsewhere."""
    from .base import TASKS
    return sorted({m.name for m in pkgutil.iter_modules(__path__)
                   if m.name not in _NOT_TASKS and not m.name.startswith("_")} | set(TASKS))


def get(name: str) -> Task:
    """The registered task called ``name``; ``BenchError`` naming the known ones otherwise."""
    from .base import TASKS
    if name not in TASKS and name in names():
        importlib.import_module(f"{__name__}.{name}")
    if name not in TASKS:
        raise BenchError(f"unknown task {name!r}; expected one of {names()}")
    return TASKS[name]


def __getattr__(attr):
    if attr == "TASKS":  # every task, imported: name -> Task
        from .base import TASKS
        for n in names():
            get(n)
        return TASKS
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
