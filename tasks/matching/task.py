"""The matching task: schedules, options and the Runner config (see the package docstring)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from backbones.precision import uniform_kind
from backbones.presets import default_head_precision

from .. import common
from ..base import DataError, Task, option, register
from .data import REPO, train_dirs, train_image_files, validate_data
from .evaluation import MMA_THRESHOLDS, RANSAC_TH, RATIO

# input_size: training crop (px, square). cost_size: (H, W) of the cost / speed input.
# samples_per_epoch: crops per epoch (iterations = epochs x samples / batch). eval_max_side:
# HPatches images are downscaled to at most this many px on the longer side (None: full size).
SCHEDULES = {
    "smoke": dict(epochs=1, batch_size=2, input_size=40, samples_per_epoch=4, lr=1e-3, train_short_side=80,
                  eval_max_side=64, num_features=64, cost_size=(64, 64),
                  label="smoke (seconds; CI check, not an accuracy)"),
    "short": dict(epochs=3, batch_size=4, input_size=40, samples_per_epoch=160, lr=2e-3, train_short_side=160,
                  eval_max_side=480, num_features=1000, cost_size=(240, 320),
                  label="short (120 iterations of 4 40x40 pairs; eval <= 480 px, top-1000; fits 2 CPU cores)"),
    "gpu": dict(epochs=25, batch_size=16, input_size=192, samples_per_epoch=4000, lr=1e-3, train_short_side=480,
                num_workers=8,
                eval_max_side=None, num_features=5000, cost_size=(480, 640),
                label="gpu (25 epochs x 250 iterations of 16 192x192 pairs; full-size eval, top-5000)"),
}


def _register():
    from mmengine.registry import DATASETS, FUNCTIONS, METRICS, MODELS

    import backbones.openmmlab  # noqa: F401  (registers QuantScalesAfterInit; checkpoint loading)

    from . import data, evaluation, network
    if "R2D2Model" in MODELS.module_dict:
        return
    network.register(MODELS)
    evaluation.register(METRICS)
    data.register(DATASETS, FUNCTIONS)


@register
class Matching(Task):
    NAME = "matching"
    DESCRIPTION = "R2D2-style dense detector/descriptor (kornia LocalFeature); HPatches MMA@3, homography accuracy"
    METRIC = {"name": "MMA@3", "key": "hpatches/mma@3", "higher_is_better": True}
    SECONDARY_KEYS = tuple(f"hpatches/{k}" for k in (
        *(f"mma@{t}" for t in MMA_THRESHOLDS), "hom@1", "hom@3", "hom@5", "matches", "keypoints",
        "snn_mma@3", "snn_hom@3", "snn_matches", "v_mma@3", "v_hom@3", "i_mma@3", "i_hom@3", "pairs",
        "ms_per_image"))
    DEFAULT_DATA = REPO / "data" / "hpatches-sample"
    SCHEDULES = SCHEDULES
    BASELINES = ("sift",)
    OPTIONS = {
        "num_features": option(int, help="keypoints per image (default: the schedule's)"),
        "train_images": option(str, help="comma-separated folders of real training images (default: "
                                         "../shared/data/coco-mini/images + ../shared/data/sr/T91 when present, "
                                         "else the embedded data/coco-sample/images)"),
    }

    def validate_data(self, root):
        validate_data(root)

    def build_config(self, backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu", variant=None,
                     width=None, num_features=None, train_images=None, **_):
        from mmengine.config import Config

        _register()
        s = SCHEDULES[schedule]
        epochs = s["epochs"] if epochs is None else epochs
        k = num_features or s["num_features"]
        if k < 1:
            raise DataError(f"--num-features must be >= 1; got {k}")
        sift = backbone in self.BASELINES
        test_loader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                           sampler=dict(type="DefaultSampler", shuffle=False),
                           collate_fn=dict(type="sequence_collate"),
                           dataset=dict(type="HPatchesSequences", root=str(Path(data_root).resolve()),
                                        max_side=s["eval_max_side"]))
        cfg = dict(
            default_scope="mmengine",
            custom_imports=dict(imports=["backbones.openmmlab"], allow_failed_imports=False),
            work_dir=str(work_dir),
            test_dataloader=test_loader, test_cfg=dict(type="TestLoop"),
            test_evaluator=dict(type="HPatchesMetric"),
            default_hooks=common.default_hooks(),
            **common.runtime(seed, device),
        )
        if sift:
            cfg.update(model=dict(type="SIFTModel", num_features=k), train_dataloader=None, train_cfg=None,
                       optim_wrapper=None, param_scheduler=None,
                       bench=dict(schedule=schedule, schedule_label=s["label"], model="kornia SIFTFeature (RootSIFT)",
                                  head_precision="none", width=None, input_size=s["input_size"],
                                  cost_size=list(s["cost_size"]), eval_max_side=s["eval_max_side"],
                                  num_features=k, matchers=["mnn", f"snn {RATIO}"], ransac_th=RANSAC_TH))
            return Config(cfg)
        bb = common.backbone_kwargs(self, backbone, variant, width, schedule)
        body = uniform_kind(bb["precision"])
        if body is None:
            raise DataError(f"variant precision {bb['precision']!r} is not supported by the matching network "
                            "(binary, int8 or fp32)")
        head = default_head_precision(self.NAME, body)
        dirs = train_dirs(train_images)
        files = train_image_files(dirs)
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}:{f.stat().st_size}\n".encode())
        optim = dict(type="Adam", lr=s["lr"], weight_decay=0.0)
        cfg.update(
            model=common.quantized_model(dict(type="R2D2Model", width=bb["width"], body=body, head=head,
                                              num_features=k)),
            train_dataloader=dict(batch_size=s["batch_size"], **common.loader_workers(device, s.get("num_workers", 0)),
                                  sampler=dict(type="DefaultSampler", shuffle=True),
                                  collate_fn=dict(type="default_collate"),
                                  dataset=dict(type="MatchingRandomCrops", dirs=[str(d) for d in dirs],
                                               crop=s["input_size"], samples=s["samples_per_epoch"],
                                               short_side=s["train_short_side"])),
            train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=epochs, val_interval=epochs + 1),
            optim_wrapper=common.optim_wrapper(device, optim, bb.get("aux_lr_mult", 1.0),
                                               clip_grad=dict(max_norm=10.0)),
            param_scheduler=[dict(type="CosineAnnealingLR", T_max=epochs, eta_min=s["lr"] * 0.01, by_epoch=True,
                                  convert_to_iter_based=True)],
            bench=dict(schedule=schedule, schedule_label=s["label"], model="R2D2-style dilated net (L2-Net-like)",
                       head_precision=head, body_precision=body, width=bb["width"], input_size=s["input_size"],
                       cost_size=list(s["cost_size"]), eval_max_side=s["eval_max_side"], num_features=k,
                       matchers=["mnn", f"snn {RATIO}"], ransac_th=RANSAC_TH, backbone=bb,
                       train_images=dict(dirs=[str(d) for d in dirs], count=len(files), sha256=h.hexdigest())),
        )
        return Config(cfg)

    def example_inputs(self, schedule, device="cpu"):
        h, w = self.SCHEDULES[schedule]["cost_size"]
        return (torch.zeros(1, 3, h, w, device=device),)

    def format_metric(self, key, value):
        if value is None:
            return ""
        if key.endswith(("matches", "keypoints", "pairs", "ms_per_image")):
            return f"{value:.0f}"
        return f"{value:.3f}"
