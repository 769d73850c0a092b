"""Segmentation: FCN on the backbone at output stride 8 (the paper's FCN-R18-D8), through MMSegmentation.

The model is mmseg's ``EncoderDecoder`` as in ``fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py``: BiNealNet
with its last two stages dilated (strides (1, 2, 1, 1), dilations (1, 1, 2, 4)), an ``FCNHead``
(2 convs, 128 channels, input concatenated) and an auxiliary ``FCNHead`` on stage 3 (loss weight
0.4, training only). ``--model deeplabv3`` swaps the decode head for ``ASPPHead`` (same backbone);
``--model fpn`` is Semantic FPN (undilated backbone, ``FPN`` neck, ``FPNHead``).

Data (``--data ROOT``), read by mmseg's dataset classes; the layout is recognised by its folders:

* CamVid (SegNet's 11-class, 480x360): ``ROOT/{train,test}/images/*.jpg`` + ``ROOT/{train,test}/labels/*.png``
  (``test`` falls back to ``val``). Label values 0..10 are the classes, 11 is void: mmseg's own
  ``label_map`` (METAINFO with 12 names, the dataset with the 11 real ones) maps 11 to the ignore
  index 255, so void is ignored in the loss and in the metric.
* Cityscapes: ``ROOT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` +
  ``ROOT/gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png`` (``CityscapesDataset``; report on val).
* ADE20K: ``ROOT/images/{training,validation}/*.jpg`` + ``ROOT/annotations/{training,validation}/*.png``
  (``ADE20KDataset``, label 0 = "other" ignored through ``reduce_zero_label``; report on validation).

Train on the train split, report on the test split (CamVid) or val (Cityscapes, ADE20K).
``validate_data`` opens every pair first and raises one ``DataError`` naming the file: a frame
without its label, image and label sizes that differ, a label map that is not single-channel,
label values outside the class list other than the ignore values, an empty split.

Metric: mmseg's ``IoUMetric``; the values are reported as fractions in 0..1 (mmseg prints percentages
rounded to 0.01; here ``mIoU``, ``aAcc``, ``mAcc`` are unrounded fractions) and ``IoU_per_class`` is a
dict class -> IoU over the classes that occur in the labels or the predictions (as mmseg's mean).

Head precision (``--head-precision``, recorded; the same for the three backbones): every conv of
neck and heads gets ``conv_cfg=dict(type='QConv', w=..., a=...)``. ``binary`` also drops their ReLUs
(the binary activation has its own PReLU; a ReLU before sign() makes every input +1) and keeps the
final 1x1 classifier ``conv_seg`` at INT8, as the backbone keeps its stem conv out of the binary part;
``int8`` makes ``conv_seg`` INT8 too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from backbones.layers import quantized_copy
from backbones.precision import KINDS
from backbones.presets import default_head_precision

from . import common
from .base import BenchError, DataError, Task, option, register

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist")
# SegNet-Tutorial's label_colours (Scripts/test_segmentation_camvid.py), void last
CAMVID_PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
                  [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192], [0, 0, 0]]
IGNORE = 255

#: layout name -> folders, suffixes, mmseg dataset, splits, label values allowed, reference (w, h) scale
LAYOUTS = {
    "camvid": dict(dataset="BenchCamVidDataset", img="{}/images", seg="{}/labels", img_suffix=".jpg",
                   seg_suffix=".png", train="train", test=("test", "val"), n_classes=11,
                   allowed=set(range(12)) | {IGNORE}, scale=(480, 360), reduce_zero_label=False),
    "cityscapes": dict(dataset="CityscapesDataset", img="leftImg8bit/{}", seg="gtFine/{}",
                       img_suffix="_leftImg8bit.png", seg_suffix="_gtFine_labelTrainIds.png", train="train",
                       test=("val",), n_classes=19, allowed=set(range(19)) | {IGNORE}, scale=(2048, 1024),
                       reduce_zero_label=False),
    "ade20k": dict(dataset="ADE20KDataset", img="images/{}", seg="annotations/{}", img_suffix=".jpg",
                   seg_suffix=".png", train="training", test=("validation",), n_classes=150,
                   allowed=set(range(151)) | {IGNORE}, scale=(2048, 512), reduce_zero_label=True),
}

# scale_factor: images resized to the layout's reference scale x this (CamVid 480x360, Cityscapes
# 2048x1024, ADE20K 2048x512: mmseg's), random 0.5-2x while training, then a crop (h, w) (at most the
# scaled image); input_size (h, w): the test input of the default CamVid data, for cost and speed
# (paper: the 512x1024 Cityscapes crop the paper names). max_train / max_test: first N frames by name.
# model: the default of --model (widths: backbones.presets.TASK_WIDTHS). On one loaded CPU core
# FCN-D8 at binealnet 2.0x took 20 s per iteration of 8 crops of 64x96 (Semantic FPN at binealnet
# 1.0x: 2.9 s), so "short" is the undilated Semantic FPN at half the widths.
SCHEDULES = {
    "smoke": dict(epochs=1, batch_size=2, lr=1e-3, scale_factor=0.25, crop=(64, 64), input_size=(90, 120),
                  max_train=2, max_test=1, num_workers=0, val_interval=None, model="fcn",
                  label="smoke (seconds; CI check, not an accuracy)"),
    "short": dict(epochs=2, batch_size=8, lr=2e-3, scale_factor=0.25, crop=(64, 96), input_size=(90, 120),
                  max_train=None, max_test=None, num_workers=1, val_interval=None, model="fpn",
                  label="short (Semantic FPN, widths x0.5 (binealnet 1.0, int8/fp32 0.5); CamVid at quarter size "
                        "90x120, crops 64x96, 2 epochs, batch 8, Adam 2e-3 + poly; all 233 test frames; "
                        "fits 2 CPU cores)"),
    "gpu": dict(epochs=100, batch_size=16, lr=1e-3, scale_factor=1.0, crop=(360, 480), input_size=(360, 480),
                max_train=None, max_test=None, num_workers=8, val_interval=20, model="fcn",
                label="gpu (FCN-D8, CamVid full 360x480, 100 epochs, batch 16, Adam + poly, bf16)"),
    "paper": dict(epochs=215, batch_size=8, lr=1e-3, scale_factor=1.0, crop=(512, 1024), input_size=(512, 1024),
                  max_train=None, max_test=None, num_workers=8, val_interval=25, model="fcn",
                  label="paper (FCN-D8 as mmseg's Cityscapes config: crop 512x1024, ~80k iterations of batch 8, "
                        "poly)"),
}
MODELS_ = ("fcn", "deeplabv3", "fpn")
MEAN, STD = common.IMAGENET_MEAN, common.IMAGENET_STD


# ---------------------------------------------------------------- data
def detect_layout(root) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (expected CamVid train/images + train/labels, Cityscapes "
                        "leftImg8bit/ + gtFine/, or ADE20K images/ + annotations/)")
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if (root / "images" / "training").is_dir():
        return "ade20k"
    if (root / "train" / "images").is_dir():
        return "camvid"
    raise DataError(f"{root}: no known segmentation layout; expected train/images + train/labels and test/ "
                    "(CamVid), leftImg8bit/{train,val} + gtFine/{train,val} (Cityscapes), or "
                    "images/{training,validation} + annotations/{training,validation} (ADE20K)")


def _splits(root: Path, layout: str) -> dict:
    """{'train': split folder name, 'test': split folder name} of ``layout`` under ``root``."""
    lay = LAYOUTS[layout]
    test = next((s for s in lay["test"] if (root / lay["img"].format(s)).is_dir()), lay["test"][0])
    return {"train": lay["train"], "test": test}


def _pairs(root: Path, layout: str, split: str, limit=None) -> list[tuple[Path, Path]]:
    """(image, label) paths of one split, sorted by image path (mmseg's order); first ``limit``."""
    lay = LAYOUTS[layout]
    img_dir, seg_dir = root / lay["img"].format(split), root / lay["seg"].format(split)
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: image folder of split '{split}' not found ({layout} layout)")
    images = sorted(img_dir.rglob("*" + lay["img_suffix"]))
    if not images:
        raise DataError(f"{img_dir}: split '{split}' is empty (no *{lay['img_suffix']} images)")
    images = images[:limit] if limit else images
    return [(im, seg_dir / (im.relative_to(img_dir).as_posix()[:-len(lay["img_suffix"])] + lay["seg_suffix"]))
            for im in images]


def _check_pair(image: Path, label: Path, allowed: set) -> None:
    from PIL import Image, UnidentifiedImageError
    if not label.is_file():
        raise DataError(f"{image}: frame has no label map (expected {label})")
    size = common.check_image(image)[0]
    common.check_image(label, "label map", decode=False)  # decoded below
    try:
        with Image.open(label) as lb:
            mode, lsize = lb.mode, lb.size
            values = np.unique(np.asarray(lb)) if mode in ("L", "P", "I;16", "I") else None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{label}: cannot be read as a label map ({e})") from None
    if values is None:
        raise DataError(f"{label}: label map has mode {mode}; expected one channel of class indices "
                        "(mode L or P), not a colour-coded image")
    if lsize != size:
        raise DataError(f"{label}: label size {lsize[0]}x{lsize[1]} differs from its image {image.name} "
                        f"({size[0]}x{size[1]})")
    bad = sorted(int(v) for v in values if int(v) not in allowed)
    if bad:
        raise DataError(f"{label}: label values {bad[:8]} outside the class list (allowed: "
                        f"{min(allowed)}..{max(allowed - {IGNORE})} and {IGNORE} = ignore)")


def validate_data(root, schedule=None) -> None:
    root = Path(root)
    layout = detect_layout(root)
    s = SCHEDULES.get(schedule, {})
    for key, split in _splits(root, layout).items():
        for image, label in _pairs(root, layout, split, s.get(f"max_{key}")):
            _check_pair(image, label, LAYOUTS[layout]["allowed"])


def data_info(root, schedule=None) -> dict:
    """Layout, splits, frame counts used, and a sha256 over the label bytes and the image names and
    byte sizes of the frames used (fast at Cityscapes size, still changes when any frame changes)."""
    root = Path(root)
    layout = detect_layout(root)
    s = SCHEDULES.get(schedule, {})
    h, counts = hashlib.sha256(), {}
    splits = _splits(root, layout)
    for key, split in splits.items():
        pairs = _pairs(root, layout, split, s.get(f"max_{key}"))
        counts[key] = len(pairs)
        for image, label in pairs:
            h.update(f"{image.relative_to(root).as_posix()}:{image.stat().st_size}\n".encode())
            h.update(label.read_bytes() if label.is_file() else b"")
    return {"name": root.name, "path": str(root), "layout": layout, "splits": splits,
            "images": counts["train"] + counts["test"], "train_images": counts["train"],
            "test_images": counts["test"], "sha256": h.hexdigest()}


# ---------------------------------------------------------------- registrations
def _register():
    """mmseg registrations (lazy: ``import tasks.segmentation`` stays light)."""
    import backbones.openmmlab  # noqa: F401  (mmcv op stand-in and BiNealNet, before mmseg.models)
    import mmseg.datasets  # noqa: F401
    import mmseg.evaluation  # noqa: F401
    import mmseg.models  # noqa: F401
    from mmengine.logging import print_log
    from mmseg.datasets import BaseSegDataset
    from mmseg.evaluation import IoUMetric
    from mmseg.registry import DATASETS, METRICS, MODELS

    if "BenchSegmentor" in MODELS.module_dict:
        return

    @DATASETS.register_module()
    class BenchCamVidDataset(BaseSegDataset):
        """SegNet's CamVid: values 0..10 classes, 11 void. The dataset is built with the 11 real
        classes, so mmseg's ``label_map`` sends void (in METAINFO only) to 255."""
        METAINFO = dict(classes=CAMVID_CLASSES + ("void",), palette=CAMVID_PALETTE)

    @METRICS.register_module()
    class BenchIoUMetric(IoUMetric):
        """mmseg's IoUMetric (same accumulation), reported as unrounded fractions plus per-class IoU."""

        def compute_metrics(self, results):
            inter, union, pred, label = (sum(r) for r in zip(*results))
            m = self.total_area_to_metrics(inter, union, pred, label, ["mIoU"], self.nan_to_num, self.beta)
            iou, acc = (np.asarray(m[k], dtype=float) for k in ("IoU", "Acc"))
            names = self.dataset_meta["classes"]
            # a class in neither the labels nor the predictions has no IoU: left out (and out of the mean)
            per_class = {c: float(v) for c, v in zip(names, iou) if not np.isnan(v)}
            print_log("per-class IoU: " + ", ".join(f"{c} {v:.4f}" for c, v in per_class.items()), "current")
            return {"mIoU": float(np.nanmean(iou)), "aAcc": float(m["aAcc"]), "mAcc": float(np.nanmean(acc)),
                    "IoU_per_class": per_class}

    def BenchSegmentor(segmentor: dict, output_precision=None):
        """Build ``segmentor``; with ``output_precision`` the heads' final 1x1 ``conv_seg`` (a plain
        nn.Conv2d in mmseg, outside ``conv_cfg``) becomes a quantized conv with the same weights."""
        m = MODELS.build(segmentor)
        if output_precision:
            heads = [m.decode_head] + ([m.auxiliary_head] if getattr(m, "auxiliary_head", None) else [])
            for head in heads:
                head.conv_seg = quantized_copy(head.conv_seg, output_precision, output_precision)
        return m

    MODELS.register_module(name="BenchSegmentor", module=BenchSegmentor)


# ---------------------------------------------------------------- config
def _heads(model, channels, num_classes, conv_cfg, act_cfg):
    norm = dict(type="BN", requires_grad=True)
    q = dict(conv_cfg=conv_cfg, act_cfg=act_cfg, norm_cfg=norm, num_classes=num_classes, align_corners=False)
    ce = lambda w: dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=w)  # noqa: E731
    aux = dict(type="FCNHead", in_channels=channels[2], in_index=2, channels=64, num_convs=1, concat_input=False,
               dropout_ratio=0.1, loss_decode=ce(0.4), **q)
    if model == "fcn":
        return None, dict(type="FCNHead", in_channels=channels[3], in_index=3, channels=128, num_convs=2,
                          concat_input=True, dropout_ratio=0.1, loss_decode=ce(1.0), **q), aux
    if model == "deeplabv3":
        return None, dict(type="ASPPHead", in_channels=channels[3], in_index=3, channels=128,
                          dilations=(1, 12, 24, 36), dropout_ratio=0.1, loss_decode=ce(1.0), **q), aux
    neck = dict(type="FPN", in_channels=list(channels), out_channels=128, num_outs=4, conv_cfg=conv_cfg)
    head = dict(type="FPNHead", in_channels=[128] * 4, in_index=[0, 1, 2, 3], feature_strides=[4, 8, 16, 32],
                channels=128, dropout_ratio=0.1, loss_decode=ce(1.0), **q)
    return neck, head, None


def _pipelines(layout, s):
    w, h = LAYOUTS[layout]["scale"]
    scale = (round(w * s["scale_factor"]), round(h * s["scale_factor"]))
    crop = (min(s["crop"][0], scale[1]), min(s["crop"][1], scale[0]))
    train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
             dict(type="RandomResize", scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
             dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
             dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs")]
    # predictions are resized back to the label's full size: the metric is on the original labels
    test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=scale, keep_ratio=True),
            dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    return train, test, crop


@register
class Segmentation(Task):
    NAME = "segmentation"
    DESCRIPTION = "FCN-D8 on the backbone (or DeepLabV3 / Semantic FPN), MMSegmentation; CamVid/Cityscapes/ADE20K; mIoU"
    METRIC = {"name": "mIoU", "key": "mIoU", "higher_is_better": True}
    SECONDARY_KEYS = ("aAcc", "mAcc", "IoU_per_class")
    DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "camvid-sample"
    SCHEDULES = SCHEDULES
    OPTIONS = {
        "model": option(str, None, list(MODELS_), "fcn (FCN-D8, the paper's), deeplabv3 (ASPP, D8) or fpn "
                                                  "(Semantic FPN, undilated); default: the schedule's"),
        "head_precision": option(str, default_head_precision("segmentation"), list(KINDS),
                                 "precision of neck and head convs, the same for every backbone"),
        "init_from": option(str, None, None, "checkpoint whose backbone.* weights initialise the backbone"),
    }

    def validate_data(self, root):
        validate_data(root)

    def data_info(self, root, schedule=None, **_):
        return data_info(root, schedule)

    def build_config(self, backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu", variant=None,
                     model=None, width=None, head_precision="fp32", init_from=None, **_):
        from mmengine.config import Config

        s = SCHEDULES[schedule]
        model = model or s["model"]
        if model not in MODELS_:
            raise BenchError(f"unknown segmentation model {model!r}; expected one of {MODELS_}")
        common.check_head_precision(head_precision)
        init_cfg = common.pretrained(init_from)
        _register()
        epochs = s["epochs"] if epochs is None else epochs
        root = Path(data_root).resolve()
        layout = detect_layout(root)
        lay, splits = LAYOUTS[layout], _splits(root, layout)
        dilated = model != "fpn"
        bb = common.backbone_kwargs(self, backbone, variant, width, schedule, out_indices=(0, 1, 2, 3),
                                    strides=(1, 2, 1, 1) if dilated else (1, 2, 2, 2),
                                    dilations=(1, 1, 2, 4) if dilated else (1, 1, 1, 1))
        channels = common.backbone_channels(bb)
        bb["type"] = "BiNealNet"
        if init_cfg:
            bb["init_cfg"] = init_cfg
        conv_cfg = None if head_precision == "fp32" else dict(type="QConv", w=head_precision, a=head_precision)
        act_cfg = None if head_precision == "binary" else dict(type="ReLU")
        neck, head, aux = _heads(model, channels, lay["n_classes"], conv_cfg, act_cfg)
        train_pipe, test_pipe, crop = _pipelines(layout, s)
        seg = dict(type="EncoderDecoder",
                   data_preprocessor=dict(type="SegDataPreProcessor", mean=MEAN, std=STD, bgr_to_rgb=True,
                                          pad_val=0, seg_pad_val=IGNORE, size=crop),
                   backbone=bb, decode_head=head, train_cfg=dict(), test_cfg=dict(mode="whole"))
        if neck:
            seg["neck"] = neck
        if aux:
            seg["auxiliary_head"] = aux
        net = dict(type="BenchSegmentor", segmentor=seg,
                   output_precision=None if head_precision == "fp32" else "int8")
        if head_precision != "fp32":  # scales of the quantized head convs follow the head's own init
            net = common.quantized_model(net)

        def dataset(key, pipeline):
            split = splits[key]
            d = dict(type=lay["dataset"], data_root=str(root),
                     data_prefix=dict(img_path=lay["img"].format(split), seg_map_path=lay["seg"].format(split)),
                     pipeline=pipeline, test_mode=key == "test")
            if layout == "camvid":
                d.update(metainfo=dict(classes=CAMVID_CLASSES), img_suffix=lay["img_suffix"],
                         seg_map_suffix=lay["seg_suffix"])
            if s[f"max_{key}"]:
                d["indices"] = s[f"max_{key}"]
            return d

        workers = s["num_workers"]

        def loader(key, pipeline, train):
            return dict(batch_size=s["batch_size"] if train else 1, **common.loader_workers(device, workers),
                        drop_last=False,
                        sampler=dict(type="DefaultSampler", shuffle=train),
                        dataset=dataset(key, pipeline))

        n_train = len(_pairs(root, layout, splits["train"], s["max_train"]))
        warmup = max(1, round(0.05 * epochs * -(-n_train // s["batch_size"])))
        evaluator = dict(type="BenchIoUMetric", iou_metrics=["mIoU"], ignore_index=IGNORE)
        optim = dict(type="Adam", lr=s["lr"], weight_decay=0.0)
        cfg = dict(
            default_scope="mmseg",
            custom_imports=dict(imports=["backbones.openmmlab", "tasks.segmentation"], allow_failed_imports=False),
            model=net,
            work_dir=str(work_dir),
            train_dataloader=loader("train", train_pipe, True),
            val_dataloader=loader("test", test_pipe, False),
            test_dataloader=loader("test", test_pipe, False),
            train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=epochs, val_interval=s["val_interval"] or epochs + 1),
            val_cfg=dict(type="ValLoop"), test_cfg=dict(type="TestLoop"),
            val_evaluator=evaluator, test_evaluator=evaluator,
            optim_wrapper=common.optim_wrapper(device, optim, bb.get("aux_lr_mult", 1.0)),
            # mmseg's poly decay (power 0.9), after a linear warm-up over the first 5% of training
            param_scheduler=[
                dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warmup),
                dict(type="PolyLR", power=0.9, eta_min=s["lr"] * 1e-2, by_epoch=True, begin=0, end=epochs,
                     convert_to_iter_based=True)],
            default_hooks=common.default_hooks(log_interval=10),
            log_processor=dict(type="LogProcessor", window_size=10, by_epoch=True),
            log_level="INFO", load_from=None, resume=False,
            **common.runtime(seed, device),
            bench=dict(schedule=schedule, schedule_label=s["label"], model=model, head_precision=head_precision,
                       width=bb["width"], input_size=list(s["input_size"]), crop=list(crop), backbone=bb,
                       layout=layout, splits=splits, classes=lay["n_classes"],
                       init_from=str(init_from) if init_from else None),
        )
        if not s["val_interval"]:
            cfg.update(val_dataloader=None, val_cfg=None, val_evaluator=None)
        return Config(cfg)

    def add_teacher(self, cfg, teacher_model, checkpoint):
        # output-level distillation from the fp32 model (tasks/recipes.py: OutputDistilled)
        cfg.model = dict(type="OutputDistilled", model=cfg.model, module="decode_head", loss="kl",
                         teacher=dict(model=teacher_model, checkpoint=checkpoint))
        cfg.bench["distillation"] = "pixel-wise KL(fp32 teacher || student) of the decode head's class softmax, T=1, weight 1, added to the cross-entropy"

    def example_inputs(self, schedule, device="cpu"):
        h, w = SCHEDULES[schedule]["input_size"]
        return (torch.zeros(1, 3, h, w, device=device),)

    def format_metric(self, key, value):
        if isinstance(value, dict):
            return ", ".join(f"{k} {v:.3f}" for k, v in value.items())
        return "" if value is None else f"{value:.4f}"
