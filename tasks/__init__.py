"""One module per task, each with the same small surface (see ``TaskSpec`` below).

A task module defines:
    NAME: str                         the task name used on the command line
    METRIC: dict                      {"name": "top1", "key": <key in the mmengine metrics dict>,
                                       "higher_is_better": True}
    SCHEDULES: dict[str, dict]        "smoke" | "short" | "paper" -> {"epochs", "batch_size", "lr", "input_size", ...}
    DEFAULT_DATA: pathlib.Path        the embedded real sample inside the project (used without --data)
    def validate_data(root) -> None   raise bench.errors.DataError("<file>: <what was expected>")
    def data_info(root) -> dict       {"name", "path", "images", "sha256"} of the data used
    def build_config(backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu",
                     variant=None, **task_opts) -> mmengine.Config
                                      a complete Runner config (model, loaders, val/test loops, evaluator)
    def cost_input(schedule) -> tuple  input shape for cost counting, e.g. (1, 3, 32, 32)
    def cost_forward(model, x)         calls the built model on a tensor for cost counting
"""
from __future__ import annotations

import importlib

TASKS = {
    "classification": "tasks.classification",
    "detection": "tasks.detection",
}


def get(name: str):
    """The task module for ``name``; a clear error for an unknown task."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return importlib.import_module(TASKS[name])
