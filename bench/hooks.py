"""mmengine hooks the runner adds to every task: stop on a NaN loss, show a progress bar."""
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
    """A tqdm bar per training epoch (disabled automatically when stderr is not a terminal)."""

    priority = "LOW"

    def before_train_epoch(self, runner):
        from tqdm import tqdm
        self.bar = tqdm(total=len(runner.train_dataloader), desc=f"epoch {runner.epoch + 1}/{runner.max_epochs}",
                        leave=False, disable=None, dynamic_ncols=True)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.bar.update(1)
        if outputs and "loss" in outputs:
            self.bar.set_postfix(loss=f"{float(outputs['loss'].detach()):.3f}")

    def after_train_epoch(self, runner):
        self.bar.close()
