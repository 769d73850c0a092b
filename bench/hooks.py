"""mmengine hooks the runner adds to every task: stop on a NaN loss, show a progress bar, make
``--resume`` equal an uninterrupted run."""
from __future__ import annotations

import math

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .errors import TrainingDiverged


@HOOKS.register_module()
class StopOnNonFiniteLoss(Hook):
    """Raise a clear error the first time the loss is NaN/inf. Checkpoints are written only at
    epoch ends, so the last good one stays on disk untouched."""

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        loss = (outputs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss.detach())):
            raise TrainingDiverged(
                f"loss became {float(loss.detach())} at epoch {runner.epoch + 1}, iteration {runner.iter + 1}; "
                f"stopped. The last good checkpoint (if any) is in {runner.work_dir}; "
                "try a lower lr or a different seed")


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """One tqdm bar per run over every training iteration, written to the terminal even when the
    console output goes to the run's log file (disabled when stderr is not a terminal)."""

    priority = "LOW"

    def __init__(self, desc: str = "training"):
        self.desc = desc

    def before_train(self, runner):
        import sys

        from tqdm import tqdm
        left = (runner.max_epochs - runner.epoch) * len(runner.train_dataloader)
        self.bar = tqdm(total=left, desc=self.desc, file=sys.__stderr__, disable=None, dynamic_ncols=True,
                        leave=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} it "
                                               "[{elapsed}<{remaining}{postfix}]")

    def before_train_epoch(self, runner):
        self.bar.set_postfix_str(f"epoch {runner.epoch + 1}/{runner.max_epochs}")

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.bar.update(1)
        if outputs and "loss" in outputs:
            self.bar.set_postfix_str(f"epoch {runner.epoch + 1}/{runner.max_epochs}, "
                                     f"loss {float(outputs['loss'].detach()):.3f}", refresh=False)

    def after_train(self, runner):
        self.bar.close()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed every RNG gets at the start of an epoch: a function of (run seed, epoch) only."""
    return (seed * 1_000_003 + epoch * 7_919 + 1) % 2**31


@HOOKS.register_module()
class ResumableRunState(Hook):
    """What a resumed run needs to equal an uninterrupted one.

    - Randomness: every RNG (python, numpy, torch, cuda) is reseeded at each epoch start from
      (seed, epoch), so augmentation after ``--resume`` draws what the uninterrupted run drew. (Saving
      the RNG state in the checkpoint would not do: validation after the save draws from it too.)
      Ranks share the seed; a task that wants per-rank draws slices a global draw by rank.
    - Wall time: each checkpoint carries the wall seconds of every part of the run so far, so the
      record of a resumed run counts all of them (time after a part's last checkpoint is lost work
      and is not counted).
    - History: the mean of every loss term over each training epoch, and the metrics of each
      validation during training, so that a record shows how the run got there (a run that stalls
      at a loss floor, a seed that diverges later than another). Checkpoints carry it too.
    """

    priority = "VERY_HIGH"

    def __init__(self, seed: int = 0):
        import time
        self.seed = seed
        self.t0 = time.time()
        self.earlier_parts: list[float] = []
        self.history: dict[str, list[dict]] = {"train": [], "val": []}
        self._sums: dict[str, float] = {}
        self._iters = 0

    def before_train_epoch(self, runner):
        from mmengine.runner import set_random_seed
        set_random_seed(epoch_seed(self.seed, runner.epoch))
        self._sums, self._iters = {}, 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for k, v in (outputs or {}).items():
            if k.startswith("loss"):
                self._sums[k] = self._sums.get(k, 0.0) + float(v.detach() if hasattr(v, "detach") else v)
        self._iters += 1

    def after_train_epoch(self, runner):
        if self._iters:
            # mmengine counts the epoch as done after these hooks: runner.epoch is still the 0-based index
            means = {k: v / self._iters for k, v in self._sums.items()}
            self.history["train"].append({"epoch": runner.epoch + 1, **means})

    def after_val_epoch(self, runner, metrics=None):
        numbers = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        if numbers:  # only training validates: the final pass is runner.test()
            self.history["val"].append({"epoch": runner.epoch, **numbers})

    def parts(self) -> list[float]:
        import time
        return self.earlier_parts + [time.time() - self.t0]

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint.setdefault("meta", {})["bench_wall_s_parts"] = self.parts()
        checkpoint["meta"]["bench_history"] = self.history

    def after_load_checkpoint(self, runner, checkpoint):
        if not getattr(runner, "_resume", False):  # weights loaded to start from (QAT): not a part of this run
            return
        meta = checkpoint.get("meta") or {}
        self.earlier_parts = list(meta.get("bench_wall_s_parts", []))
        self.history = meta.get("bench_history", {"train": [], "val": []})
