"""Recipes: how a precision is trained within a schedule's budget. One place for every task.

A *schedule* is the budget (data, epochs, batch size, input size), owned by the task. A *recipe*
is how a backbone is trained within it: optimizer, lr per batch size, warm-up, decay,
weight-decay groups, gradient clipping, distillation from the FP32 model, stages, or no training
at all (post-training quantization). ``apply`` rewrites a task's config for a recipe and records
the recipe in ``cfg.bench.recipe``; every run's record names it.

Weight-decay groups (``BenchParamGroups``, by module type, not by name): quantizer parameters
(alpha, beta, b0, b1, slope, gamma, LSQ scales), norms and biases are never decayed; the latent
float weights of binary convs get ``binary_latent_decay`` (ReActNet: 1e-5, or 0); every other
weight gets ``weight_decay``. Quantizer parameters take ``lr * aux_lr_mult`` (the seed's variant).

Published anchors: ReActNet / AdamBNN (Adam 2.5e-3 at batch 512, linear decay to 0, 1e-5 decay on
latent weights, distribution loss from a float teacher, two steps); BiBench (binary models
initialised from the float model); INT8 normally from a trained FP32 model (PTQ or a short QAT).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .base import BenchError


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    optimizer: str = "AdamW"          # SGD | Adam | AdamW
    lr: float = 2e-3                  # at ref_batch; scaled to the schedule's batch size by lr_for
    ref_batch: int = 256
    weight_decay: float = 0.0         # on float / INT8 conv and linear weights
    binary_latent_decay: float = 0.0  # on the latent float weights of binary convs
    momentum: float = 0.9             # SGD only (Nesterov)
    warmup_epochs: float = 0.0        # linear warm-up from 1e-3 x lr
    decay: str = "cosine"             # cosine | linear (to 0) | none
    clip_grad: float | None = None    # max L2 norm
    distill: bool = False             # distribution loss from the FP32 teacher (--teacher)
    two_stage: bool = False           # binary activations with float weights first, then binary weights
    from_teacher: bool = False        # start from the FP32 teacher's weights (INT8 QAT / PTQ)
    train: bool = True                # False: no training (PTQ: calibrate, then evaluate)
    calibration_batches: int = 0      # PTQ: training batches observed for the INT8 activation scales
    without_teacher: str | None = None  # as a task's default with no teacher at hand, train this one

    def lr_for(self, batch_size: int) -> float:
        """SGD: linear in the batch size (Goyal et al. 2017). Adam/AdamW: square root (Malladi et al.,
        NeurIPS 2022, the SDE scaling rule for adaptive methods): linear scaling took AdamW 2e-3/256
        to 6.25e-5 at detection's batch 8, where binealnet adamw-kd scored AP 0 (results/NOTES.md)."""
        ratio = batch_size / self.ref_batch
        return self.lr * (ratio if self.optimizer == "SGD" else ratio ** 0.5)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_ADAMW = dict(optimizer="AdamW", lr=2e-3, ref_batch=256, weight_decay=1e-2, warmup_epochs=1.0, decay="cosine")
RECIPES = {r.name: r for r in [
    Recipe("sgd", "SGD 0.1 per 128 images, Nesterov, wd 5e-4 on every weight (binary latent ones too), cosine, "
                  "no warm-up: the float ResNet recipe the suite used for every backbone",
           optimizer="SGD", lr=0.1, ref_batch=128, weight_decay=5e-4, binary_latent_decay=5e-4, decay="cosine"),
    Recipe("sgd-warmup", "sgd with a 1-epoch linear warm-up: the least change that keeps float weights with binary "
                         "activations from diverging at sgd's lr (scripts/repro_binary_activations.py)",
           optimizer="SGD", lr=0.1, ref_batch=128, weight_decay=5e-4, binary_latent_decay=5e-4, decay="cosine",
           warmup_epochs=1.0),
    Recipe("adamw", "AdamW 2e-3 per 256 images, wd 1e-2 on float/INT8 weights and none on binary latent "
                    "weights, 1-epoch warm-up, cosine", **_ADAMW),
    Recipe("adamw-kd", "adamw with the loss replaced by ReActNet's distribution loss from the FP32 teacher",
           **_ADAMW, distill=True, without_teacher="adamw"),
    Recipe("two-stage", "adamw; first half of the epochs binary activations with float weights, second half "
                        "binary weights initialised from the first (ReActNet's two steps in one budget)",
           **_ADAMW, two_stage=True),
    Recipe("reactnet", "ReActNet: Adam 2.5e-3 per 512 images, linear decay to 0, wd 1e-5 on latent weights, "
                       "distribution loss from the FP32 teacher, two stages",
           optimizer="Adam", lr=2.5e-3, ref_batch=512, weight_decay=1e-5, binary_latent_decay=1e-5,
           decay="linear", distill=True, two_stage=True),
    Recipe("qat", "INT8 quantization-aware fine-tune from the trained FP32 model (--teacher): AdamW 1e-4 per 256, "
                  "no warm-up, cosine", optimizer="AdamW", lr=1e-4, ref_batch=256, weight_decay=1e-2,
           from_teacher=True),
    Recipe("ptq", "INT8 post-training quantization of the trained FP32 model (--teacher): activation scales "
                  "observed on 8 training batches, no training", from_teacher=True, train=False,
           calibration_batches=8),
]}


#: names the optimizer a task's own build_config sets (no recipe applied); records say so too
TASK_DEFAULT = "task-default"


def get(name: str) -> Recipe | None:
    """The named recipe; None for ``task-default`` (the task's own optimizer and schedule)."""
    if name == TASK_DEFAULT:
        return None
    if name not in RECIPES:
        raise BenchError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES) + [TASK_DEFAULT]} "
                         "(see `bench list`)")
    return RECIPES[name]


def check(recipe: Recipe | None, backbone: str, teacher) -> None:
    """One clear error when a recipe (None: task-default) cannot run as asked."""
    import backbones
    if recipe is None:
        if teacher:
            raise BenchError(f"recipe {TASK_DEFAULT} does not use a teacher; drop --teacher")
        return
    precision = backbones.PRESETS.get(backbone, {}).get("precision")
    if (recipe.distill or recipe.from_teacher) and not teacher:
        raise BenchError(f"recipe {recipe.name} needs --teacher CKPT (a trained fp32 run of this task; "
                         "`bench compare` trains it first and passes it on)")
    if teacher and not (recipe.distill or recipe.from_teacher):
        raise BenchError(f"recipe {recipe.name} does not use a teacher; drop --teacher or choose a recipe that "
                         "distils (adamw-kd, reactnet) or starts from it (qat, ptq)")
    if recipe.from_teacher and precision != "int8":
        raise BenchError(f"recipe {recipe.name} turns the FP32 model into INT8; use it with --backbone int8")
    if recipe.two_stage and precision != "binary":
        raise BenchError(f"recipe {recipe.name} has a binary-weights stage; use it with a binary backbone")


def _register():
    from mmengine.hooks import Hook
    from mmengine.optim import DefaultOptimWrapperConstructor
    from mmengine.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS

    if "BenchParamGroups" in OPTIM_WRAPPER_CONSTRUCTORS.module_dict:
        return

    from mmengine.registry import MODELS
    MODELS.register_module(name="OutputDistilled", module=OutputDistilled, force=True)

    @HOOKS.register_module()
    class TwoStageBinaryHook(Hook):
        """Binary weights off (latent float weights used as they are) before ``switch_epoch``, on
        from it, with beta re-set to mean|W| of the weights stage 1 trained. Set at every epoch
        start from the epoch number, so a resumed run is in the right stage."""

        def __init__(self, switch_epoch: int):
            self.switch_epoch = switch_epoch

        def before_train_epoch(self, runner):
            from backbones.layers import QConv2d
            from backbones.quantizers import BinaryWeightQuantizer
            on = runner.epoch >= self.switch_epoch
            from .common import unwrap
            model = unwrap(runner.model)
            for m in model.modules():
                wq = getattr(m, "weight_quantizer", None)
                if isinstance(m, QConv2d) and isinstance(wq, BinaryWeightQuantizer) and wq._active != on:
                    wq.set_active(on)
                    if on:
                        m.reset_quantizer_scales()

    @HOOKS.register_module()
    class CalibrateInt8Hook(Hook):
        """PTQ: before testing, observe INT8 activation scales on ``batches`` training batches
        (quantizers in training mode, BatchNorm in eval mode so the FP32 statistics stay)."""

        priority = "HIGHEST"

        def __init__(self, batches: int, dataloader: dict):
            self.batches, self.dataloader = batches, dataloader

        def before_test(self, runner):
            from .common import unwrap
            model = unwrap(runner.model)
            loader = runner.build_dataloader(self.dataloader)
            n, seen = calibrate_int8(model, (model.data_preprocessor(b, False) for b in loader), self.batches)
            runner.logger.info(f"PTQ: {n} INT8 quantizers calibrated on {seen} training batches")

    @OPTIM_WRAPPER_CONSTRUCTORS.register_module()
    class BenchParamGroups(DefaultOptimWrapperConstructor):
        """Parameter groups by what a parameter is (see the module docstring); paramwise_cfg keys:
        aux_lr_mult, binary_latent_decay, backbone_lr_mult (default 1)."""

        def add_params(self, params, module, prefix="", is_dcn_module=None):
            from torch import nn

            from backbones.quantizers import BinaryWeightQuantizer, Quantizer
            opt = self.paramwise_cfg
            wd = self.base_wd or 0.0
            seen = set()
            quant_params = {id(p) for m in module.modules() if isinstance(m, Quantizer) for p in m.parameters()}
            binary_latent = {id(m.weight) for m in module.modules()
                             if isinstance(getattr(m, "weight_quantizer", None), BinaryWeightQuantizer)}
            norms = {id(p) for m in module.modules()
                     if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
                     for p in m.parameters(recurse=False)}
            # backbone_lr_mult scales every backbone group (the usual fine-tuning knob; also a diagnostic)
            backbone = getattr(module, "backbone", None)
            in_backbone = {id(p) for p in backbone.parameters()} if backbone is not None else set()
            for name, p in module.named_parameters():
                if id(p) in seen or not p.requires_grad:
                    continue
                seen.add(id(p))
                lr = self.base_lr * (opt.get("backbone_lr_mult", 1.0) if id(p) in in_backbone else 1.0)
                if id(p) in quant_params:
                    group = dict(lr=lr * opt.get("aux_lr_mult", 1.0), weight_decay=0.0)
                elif id(p) in norms or p.dim() <= 1:
                    group = dict(lr=lr, weight_decay=0.0)
                elif id(p) in binary_latent:
                    group = dict(lr=lr, weight_decay=opt.get("binary_latent_decay", 0.0))
                else:
                    group = dict(lr=lr, weight_decay=wd)
                params.append(dict(params=[p], **group))


#: output-level distillation for dense tasks (a task's ``add_teacher`` picks one): the student's
#: output of one submodule is pulled towards the FP32 teacher's, added to the task's own loss.
#: kl: pixel-wise KL(teacher || student) of the class softmax (Structured KD's pixel-wise term,
#: Liu et al. 2019), per pixel, times T^2; l1: mean absolute difference (super-resolution outputs);
#: bce: per-class sigmoid maps (CenterNet's heatmap), binary cross-entropy to the teacher's probabilities.
DENSE_KD_LOSSES = ("kl", "l1", "bce")


def dense_kd_loss(kind: str, student, teacher, temperature: float = 1.0):
    import torch.nn.functional as F
    s, t = student.float(), teacher.float()
    if kind == "l1":
        return F.l1_loss(s, t)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(s, t.sigmoid())
    log_p_s = F.log_softmax(s / temperature, dim=1)
    log_p_t = F.log_softmax(t / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True)  # p_t * (log p_t - log p_s)
    return kl.sum(1).mean() * temperature ** 2


def load_teacher(teacher: dict):
    """The fp32 teacher ``dict(model=cfg, checkpoint=path)``: built, loaded strictly, in eval mode and
    frozen; one clear error when the checkpoint does not fit."""
    from mmengine.registry import MODELS
    from mmengine.runner import load_checkpoint
    t = MODELS.build(teacher["model"])
    try:
        load_checkpoint(t, teacher["checkpoint"], map_location="cpu", strict=True, logger="silent")
    except RuntimeError as e:
        raise BenchError(f"--teacher {teacher['checkpoint']}: does not fit the teacher model ({str(e)[:300]})") from None
    return t.eval().requires_grad_(False)


def OutputDistilled(model: dict, teacher: dict, module: str, loss: str, weight: float = 1.0,
                    temperature: float = 1.0):
    """Build ``model`` so that in training its loss gains ``weight * loss_kd``: ``module``'s output
    against the same submodule's output in the teacher (``teacher = dict(model=cfg,
    checkpoint=path)``, loaded strictly, frozen, kept outside the module tree: not trained, not
    saved, not counted). The submodule's ``forward`` is wrapped, not hooked, because heads such as
    mmseg's call ``self.forward`` directly."""
    import torch
    from mmengine.registry import MODELS

    if loss not in DENSE_KD_LOSSES:
        raise BenchError(f"distillation loss {loss!r}: expected one of {DENSE_KD_LOSSES}")
    student = MODELS.build(model)
    t = load_teacher(teacher)
    student.__dict__["_kd_teacher"] = t
    seen = {}

    def capture(net, key):
        sub = net.get_submodule(module)
        own = sub.forward

        def forward(*a, **kw):
            out = own(*a, **kw)
            seen[key] = out
            return out
        sub.forward = forward
    capture(student, "student")
    capture(t, "teacher")
    own_forward = student.forward

    def forward(inputs, data_samples=None, mode="tensor"):
        if mode != "loss":
            return own_forward(inputs, data_samples, mode)
        seen.clear()
        losses = own_forward(inputs, data_samples, mode)
        with torch.no_grad():
            t.to(inputs.device).eval()(inputs, data_samples, mode="tensor")
        losses["loss_kd"] = weight * dense_kd_loss(loss, seen["student"], seen["teacher"], temperature)
        return losses
    student.forward = forward
    return student


def calibrate_int8(model, batches, n: int) -> tuple[int, int]:
    """Observe the INT8 activation scales of ``model`` on up to ``n`` preprocessed batches (dicts
    with ``inputs``): quantizers in training mode (they observe), everything else in eval mode
    (BatchNorm keeps the float model's statistics). Returns (quantizers, batches seen)."""
    import torch

    from backbones.quantizers import Int8Quantizer
    quantizers = [m for m in model.modules() if isinstance(m, Int8Quantizer)]
    model.eval()
    for q in quantizers:
        q.train()
    seen = 0
    with torch.no_grad():
        for batch in batches:
            if seen >= n:
                break
            model(batch["inputs"], mode="tensor")
            seen += 1
    model.eval()
    return len(quantizers), seen


def optim_wrapper(device: str, optimizer: dict, aux_lr_mult: float = 1.0, binary_latent_decay: float = 0.0,
                  clip_grad: dict | None = None) -> dict:
    """mmengine optim_wrapper with the groups above; bf16 AMP on CUDA."""
    _register()
    w = dict(type="AmpOptimWrapper", dtype="bfloat16") if device == "cuda" else dict(type="OptimWrapper")
    optimizer = dict(optimizer)
    optimizer.setdefault("weight_decay", 0.0)
    w.update(optimizer=optimizer, constructor="BenchParamGroups",
             paramwise_cfg=dict(aux_lr_mult=aux_lr_mult, binary_latent_decay=binary_latent_decay))
    if clip_grad:
        w["clip_grad"] = clip_grad
    return w


def apply(cfg, recipe: Recipe, device: str, teacher=None):
    """Rewrite ``cfg`` (a task's Runner config) for ``recipe`` within the schedule's epochs and batch."""
    cfg.bench["recipe"] = recipe.to_dict()
    if teacher:
        cfg.bench["teacher"] = str(teacher)
    if not recipe.train:  # PTQ: the teacher's weights, scales observed on training batches, then test
        _register()
        cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [
            dict(type="CalibrateInt8Hook", batches=recipe.calibration_batches, dataloader=cfg.train_dataloader)]
        cfg.load_from = str(teacher)
        cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        return cfg
    batch = cfg.train_dataloader.batch_size
    epochs = cfg.train_cfg.get("max_epochs")
    if not epochs:
        raise BenchError(f"recipe {recipe.name}: the task's training loop is not epoch-based; recipes schedule by epochs")
    lr = recipe.lr_for(batch)
    opt = dict(type=recipe.optimizer, lr=lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "SGD":
        opt.update(momentum=recipe.momentum, nesterov=True)
    aux = cfg.bench.get("backbone", {}).get("aux_lr_mult", 1.0)
    clip = dict(max_norm=recipe.clip_grad, norm_type=2) if recipe.clip_grad else None
    cfg.optim_wrapper = optim_wrapper(device, opt, aux, recipe.binary_latent_decay, clip)
    sched = []
    # whole epochs of warm-up, and only where the budget has at least 4x that many (smoke runs: none)
    warm = recipe.warmup_epochs if epochs >= 4 * recipe.warmup_epochs else 0
    if warm > 0:
        sched.append(dict(type="LinearLR", start_factor=1e-3, by_epoch=True, begin=0, end=warm,
                          convert_to_iter_based=True))
    if recipe.decay == "cosine":
        sched.append(dict(type="CosineAnnealingLR", T_max=epochs - warm, eta_min=0, by_epoch=True, begin=warm,
                          end=epochs, convert_to_iter_based=True))
    elif recipe.decay == "linear":
        sched.append(dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=True, begin=warm, end=epochs,
                          convert_to_iter_based=True))
    cfg.param_scheduler = sched
    if recipe.two_stage:
        _register()
        cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [
            dict(type="TwoStageBinaryHook", switch_epoch=max(1, epochs // 2))]
    if recipe.from_teacher:
        cfg.load_from = str(teacher)
    return cfg
