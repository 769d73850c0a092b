"""The task surface: what every task provides, its defaults, the registry and the task's errors.

A task is one module in ``tasks/`` holding one ``Task`` subclass decorated with ``@register``
(modules are discovered, so nothing else needs editing). Only ``NAME``, ``METRIC``,
``DEFAULT_DATA``, ``SCHEDULES``, ``validate_data`` and ``build_config`` are required; the rest
has defaults here. Shared plumbing (backbone config, optimizer wrapper, hooks) is in
``tasks/common.py``; bench/ calls only what this class defines.

``build_config(backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu",
variant=None, **options)`` returns a complete mmengine Runner config (model, loaders, loops,
evaluator); ``options`` are the task's own ``OPTIONS`` (parsed after ``--task``), each present
with its default when the user did not set it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from backbones.errors import BenchError, DataError  # noqa: F401  (tasks raise them; re-exported)


def option(type=str, default=None, choices=None, help=""):  # noqa: A002 - argparse's own names
    """A task option: becomes ``--name`` on the command line after ``--task``."""
    return dict(type=type, default=default, choices=choices, help=help)


class Task:
    NAME: str = ""
    #: name (shown in tables), key (in mmengine's metrics dict), higher_is_better
    METRIC: dict = {}
    #: further metric keys copied into the record's ``metric.secondary``
    SECONDARY_KEYS: tuple = ()
    DEFAULT_DATA: Path | None = None
    #: name -> dict(epochs, batch_size, input_size, label, ...); "smoke" must exist (CI)
    SCHEDULES: dict = {}
    #: the task's own flags: name -> ``option(...)`` (``--width`` is added to every task's by ``register``)
    OPTIONS: dict = {}
    #: backbone -> recipe name (tasks/recipes.py) used when --recipe is not given; a backbone not
    #: listed trains with the optimizer the task's build_config sets (recorded as "task-default")
    DEFAULT_RECIPES: dict = {}
    #: names of reference rows, not backbone presets: --backbone accepts them. Untrained when the config
    #: has no train_cfg (bicubic, sift); detection's frozen-random trains its neck and head only
    BASELINES: tuple = ()
    #: one line for `bench list`
    DESCRIPTION: str = ""

    # ---------------------------------------------------------------- data
    def validate_data(self, root) -> None:
        """Raise ``DataError("<file>: <what was expected>")`` for anything the loaders would choke on."""
        raise NotImplementedError

    def data_info(self, root, schedule=None, **options) -> dict:
        """Name, path, file count and a sha256 over the relative paths and bytes of every file
        (``options``: the run's task options, for tasks whose data depends on them)."""
        root = Path(root)
        h, n = hashlib.sha256(), 0
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
            n += 1
        return {"name": root.name, "path": str(root), "files": n, "sha256": h.hexdigest()}

    # ---------------------------------------------------------------- model
    def build_config(self, backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu", variant=None,
                     **options):
        raise NotImplementedError

    def example_inputs(self, schedule, device="cpu") -> tuple:
        """Inputs of one forward at batch 1, for cost counting and speed (a matcher would give an
        image pair, super-resolution a low-res image). Default: one square RGB image."""
        import torch
        s = self.SCHEDULES[schedule]["input_size"]
        return (torch.zeros(1, 3, s, s, device=device),)

    def forward_for_cost(self, model, *inputs):
        """The network's forward without post-processing (NMS, matching): what cost and speed measure."""
        return model(*inputs, mode="tensor")

    def add_teacher(self, cfg, teacher_model: dict, checkpoint: str) -> None:
        """Distillation: make ``cfg.model`` learn from ``teacher_model`` (a config) loaded from
        ``checkpoint``. Tasks that support a distilling recipe override this."""
        raise BenchError(f"task {self.NAME} has no distillation loss yet; choose a recipe without distillation")

    # ---------------------------------------------------------------- tables
    def format_metric(self, key: str, value) -> str:
        """One table cell for the primary metric (key ``METRIC['name']``) or a secondary one."""
        return "" if value is None else f"{value:.4g}"

    # ---------------------------------------------------------------- defaults derived from the above
    def options_with_defaults(self, given: dict) -> dict:
        unknown = sorted(set(given) - set(self.OPTIONS))
        if unknown:
            raise BenchError(f"{', '.join('--' + k.replace('_', '-') for k in unknown)}: not an option of task "
                             f"{self.NAME}; its options: {sorted(self.OPTIONS) or 'none'}")
        return {k: given.get(k) if given.get(k) is not None else spec.get("default")
                for k, spec in self.OPTIONS.items()}


#: task name -> Task instance
TASKS: dict[str, Task] = {}


def register(cls):
    """Class decorator: make a Task subclass available by its NAME (``@register`` above the class)."""
    for attr in ("NAME", "METRIC", "DEFAULT_DATA", "SCHEDULES"):
        if not getattr(cls, attr):
            raise TypeError(f"task {cls.__name__} must set {attr}")
    if "smoke" not in cls.SCHEDULES:
        raise TypeError(f"task {cls.NAME} needs a 'smoke' schedule (CI runs it)")
    missing = {"name", "key", "higher_is_better"} - set(cls.METRIC)
    if missing:
        raise TypeError(f"task {cls.NAME}: METRIC lacks {sorted(missing)}")
    if "width" not in cls.OPTIONS:  # every task's --width, declared once; defaults: backbones.presets.TASK_WIDTHS
        from backbones.presets import width_help
        cls.OPTIONS = {"width": option(float, help=width_help(cls.NAME)), **cls.OPTIONS}
    TASKS[cls.NAME] = cls()
    return cls
