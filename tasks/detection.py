"""Detection: CenterNet-R18 without DCN (the paper's setup) or RetinaNet + FPN, through MMDetection.

The configs mirror mmdet 3.3's ``centernet_r18_8xb16-crop512-140e_coco.py`` (with ``use_dcn=False``)
and ``retinanet_r18_fpn_1x_coco.py``, built here in Python, with our BiNealNet as the backbone.

Data (``--data ROOT``): COCO instances json read by mmdet's ``CocoDataset``; the classes are the
json's ``categories`` (so 80-class COCO and 1-class Penn-Fudan both work). Accepted layouts:

* ``ROOT/annotations/instances_train*.json`` + ``ROOT/annotations/instances_val*.json``; the images
  of each split in ``ROOT/<split name>/`` (e.g. ``train2017/``, ``val2017/``) if that folder exists,
  else ``ROOT/images/``, else ``ROOT/`` (``file_name`` may then hold a sub-folder). Other
  ``instances_*.json`` beside them (e.g. ``instances_all.json``) are ignored.
* exactly one ``ROOT/annotations/instances_*.json`` (no train/val pair): used for BOTH training and
  evaluation. That is for smoke runs and CI only (the score is not held out); ``data_info`` says so
  in the record (``layout``).

``validate_data`` checks every json before mmdet sees it and raises ``DataError`` naming the file
and the record: missing root / annotations / json, json that does not parse or lacks
``images``/``annotations``/``categories``, boxes with non-positive size or outside their image
(1 px tolerance for rounding), unknown image or category ids, and missing image files. Nothing is
skipped silently.

Neck/head precision (``--head-precision``, recorded; the same for the three backbones): ``fp32``
(default), ``int8`` (every neck/head conv and deconv: per-channel weights, per-tensor signed
activations) or ``binary`` (binary weights and activations; the ReLUs of neck and head are removed
because the binary activation has its own PReLU and a ReLU before sign() makes every input +1;
the final prediction convs stay INT8, as the backbone keeps its stem conv out of the binary part).

Recipe (``DEFAULT_RECIPES``): every backbone trains under ``adamw`` (AdamW 2e-3 per 256 images,
square-root scaled: 3.5e-4 at ``short``'s batch 8; wd 1e-2, 1-epoch warm-up, cosine, no clipping). The
task's own optimizer (``--recipe task-default``: Adam at the schedule's lr, step decay, clip 35) is mmdet's
CenterNet rate raised for a 16x smaller batch, and left runs at the level of a frozen random backbone;
the check and its numbers: docs/2026-12-05-detection-recipe.md. The ``frozen-random`` reference row
takes no recipe (the task's own optimizer).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch.nn as nn

from backbones.layers import quantized_copy
from backbones.precision import KINDS
from backbones.presets import default_head_precision

from . import common
from .base import BenchError, DataError, Task, option, register


# input_size: the square training crop and the cost-counting input. Images are scaled by
# input_size / 512 first, so a smaller schedule sees the same image content as mmdet's 512 crop.
# lr is Adam's for batch_size (Adam 5e-4 as the original CenterNet; one optimizer for all backbones).
# max_images: the first N images of each split (None = all).
SCHEDULES = {
    # val_interval None: no validation loop (smoke: the runner's test pass evaluates the split once)
    "smoke": dict(epochs=1, batch_size=2, lr=5e-4, input_size=128, max_images=4, num_workers=0, val_interval=None,
                  label="smoke (seconds; CI check, not an accuracy)"),
    "short": dict(epochs=24, batch_size=8, lr=1e-3, input_size=256, max_images=None, num_workers=2,
                  val_interval=8, label="short (input 256, 24 epochs, batch 8; fits 2 CPU cores)"),
    # the recipe sweep (scripts/sweep_detection.sh), a quarter of short's pixels, one seed
    "sweep": dict(epochs=24, batch_size=8, lr=1e-3, input_size=128, max_images=None, num_workers=2,
                  val_interval=None, label="sweep (input 128, 24 epochs, batch 8: the CPU recipe sweep; a tiny "
                                           "budget, a first signal only)"),
    "gpu": dict(epochs=140, batch_size=16, lr=5e-4, input_size=512, max_images=None, num_workers=8,
                val_interval=35, label="gpu (mmdet CenterNet's recipe: input 512, 140 epochs, batch 16, Adam 5e-4, "
                                       "lr steps at 90/120; on Penn-Fudan's 120 training images, 1,050 iterations)"),
    "paper": dict(epochs=140, batch_size=16, lr=5e-4, input_size=512, max_images=None, num_workers=4,
                  val_interval=10, label="paper (mmdet CenterNet: crop 512, 140 epochs, lr steps at 90/120; "
                                         "one GPU, batch 16, Adam 5e-4)"),
}
MODELS_ = ("centernet", "retinanet")
#: convs that produce the predictions: INT8 rather than binary under head_precision=binary
OUTPUT_CONVS = {"centernet": ("heatmap_head.2", "wh_head.2", "offset_head.2"),
                "retinanet": ("retina_cls", "retina_reg")}
MEAN, STD = common.IMAGENET_MEAN, common.IMAGENET_STD
BOX_TOLERANCE = 1.0  # px a box may pass the image edge (float rounding in COCO jsons)


# ---------------------------------------------------------------- data
def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); expected a COCO instances file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations and categories")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(d.get(k), list)]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} list; expected a COCO instances file "
                        "(keys images, annotations, categories)")
    return d


def _image_dir(root: Path, json_path: Path) -> Path:
    split = json_path.stem[len("instances_"):]
    return next(d for d in (root / split, root / "images", root) if d.is_dir())


def _layout(root) -> dict:
    """{'train': (json, image dir), 'val': (json, image dir), 'single': bool}; DataError if none fits."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (expected annotations/instances_*.json and images)")
    ann = root / "annotations"
    jsons = sorted(ann.glob("instances_*.json")) if ann.is_dir() else []
    train = [j for j in jsons if j.name.startswith("instances_train")]
    val = [j for j in jsons if j.name.startswith("instances_val")]
    if len(train) == 1 and len(val) == 1:
        t, v, single = train[0], val[0], False
    elif not train and not val and len(jsons) == 1:
        t = v = jsons[0]
        single = True
    else:
        found = ", ".join(j.name for j in jsons) or "none"
        raise DataError(f"{ann}: expected one instances_train*.json and one instances_val*.json, or a single "
                        f"instances_*.json (used for train and val); found: {found}")
    return {"train": (t, _image_dir(root, t)), "val": (v, _image_dir(root, v)), "single": single}


def _check_coco(path: Path, image_dir: Path) -> dict:
    """Every record of one COCO json: ids, boxes inside their image, image files present."""
    d = _read_json(path)
    ids = [im.get("id") if isinstance(im, dict) else None for im in d["images"]]
    dup = next((i for i in ids if ids.count(i) > 1), None) if len(set(map(str, ids))) != len(ids) else None
    if dup is not None:
        names = [im.get("file_name") for im in d["images"] if im.get("id") == dup]
        raise DataError(f"{path}: image id {dup} is used by {len(names)} images ({', '.join(map(str, names[:3]))}); "
                        "image ids must be unique, or boxes are paired with the wrong image")
    try:
        images = {im["id"]: im for im in d["images"]}
        cats = {c["id"]: c["name"] for c in d["categories"]}
        sizes = {i: (float(im["width"]), float(im["height"]), im["file_name"]) for i, im in images.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: every image needs id, file_name, width, height and every category id, "
                        f"name ({e!r} missing or bad)") from None
    if not cats:
        raise DataError(f"{path}: categories is empty")
    if len(set(cats.values())) != len(cats):
        raise DataError(f"{path}: category names repeat; mmdet maps classes by name")
    bad = []
    for a in d["annotations"]:
        aid = a.get("id", "?") if isinstance(a, dict) else "?"
        try:
            img_id, box, cat = a["image_id"], [float(v) for v in a["bbox"]], a["category_id"]
        except (KeyError, TypeError, ValueError):
            bad.append(f"annotation id {aid}: needs image_id, category_id and bbox [x, y, w, h]")
            continue
        if img_id not in sizes:
            bad.append(f"annotation id {aid}: image_id {img_id} is not in images")
            continue
        w_img, h_img, fname = sizes[img_id]
        where = f"annotation id {aid} (image {fname})"
        if cat not in cats:
            bad.append(f"{where}: category_id {cat} is not in categories")
        elif len(box) != 4:
            bad.append(f"{where}: bbox {a['bbox']} is not [x, y, w, h]")
        elif not all(math.isfinite(v) for v in box):
            bad.append(f"{where}: bbox {a['bbox']} is not four finite numbers")
        elif box[2] <= 0 or box[3] <= 0:
            bad.append(f"{where}: bbox {a['bbox']} has non-positive width or height")
        elif (box[0] < -BOX_TOLERANCE or box[1] < -BOX_TOLERANCE or box[0] + box[2] > w_img + BOX_TOLERANCE
              or box[1] + box[3] > h_img + BOX_TOLERANCE):
            bad.append(f"{where}: bbox {a['bbox']} lies outside the {w_img:g}x{h_img:g} image")
    if bad:
        raise DataError(f"{path}: {len(bad)} bad annotation(s); first: " + "; ".join(bad[:3]))
    if not d["annotations"]:
        raise DataError(f"{path}: annotations is empty; detection needs boxes to train on and to score against")
    if all(a.get("iscrowd", 0) for a in d["annotations"]):
        raise DataError(f"{path}: every annotation is iscrowd=1; COCO AP ignores crowd boxes, so nothing would be "
                        "scored (AP would read -1)")
    huge = next(((f, w, h) for w, h, f in sizes.values() if w * h > common.MAX_IMAGE_PIXELS), None)
    if huge:
        raise DataError(f"{path}: image {huge[0]} is {huge[1]:g}x{huge[2]:g}, over {common.MAX_IMAGE_PIXELS:,} "
                        "pixels (a decompression bomb, or not a photo)")
    missing = [(i, f) for i, (_, _, f) in sizes.items() if not (image_dir / f).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} image file(s) missing under {image_dir}/, e.g. {missing[0][1]} "
                        f"(image id {missing[0][0]})")
    for _, _, f in sizes.values():  # decoded in full: an empty, truncated or non-image file fails here, not mid-run
        common.check_image(image_dir / f, f"image of {path.name}")
    return d


def _validate(root) -> None:
    """Raise ``DataError`` (naming the file and the record) for anything mmdet would choke on."""
    lay = _layout(root)
    train = _check_coco(*lay["train"])
    if lay["single"]:
        return
    val = _check_coco(*lay["val"])
    key = lambda d: [(c["id"], c["name"]) for c in d["categories"]]  # noqa: E731
    if key(train) != key(val):
        raise DataError(f"{lay['val'][0]}: categories differ from {lay['train'][0].name}; "
                        "train and val must list the same categories in the same order")


def _categories(json_path: Path) -> list[str]:
    return [c["name"] for c in _read_json(json_path)["categories"]]


def _data_info(root, schedule=None) -> dict:
    """Name, path, image counts and a sha256 over the json(s) and the sorted image names and byte
    sizes (not the image bytes: fast at any size)."""
    root = Path(root)
    lay = _layout(root)
    n = SCHEDULES[schedule]["max_images"] if schedule else None
    h, counts = hashlib.sha256(), {}
    for split in ("train", "val"):
        path, img_dir = lay[split]
        images = _read_json(path)["images"]
        counts[split] = len(images)
        if split == "val" and lay["single"]:
            continue
        h.update(path.read_bytes())
        for im in sorted(images, key=lambda im: im["file_name"]):
            f = img_dir / im["file_name"]
            h.update(f"{im['file_name']}:{f.stat().st_size}\n".encode())
    used = {k: min(v, n) if n else v for k, v in counts.items()}
    return {"name": root.name, "path": str(root), "images": used["train"] + (0 if lay["single"] else used["val"]),
            "train_images": used["train"], "val_images": used["val"], "sha256": h.hexdigest(),
            "annotations": {k: str(lay[k][0].relative_to(root)) for k in ("train", "val")},
            "layout": ("single json used for train AND val (smoke/CI only; the score is not held out)"
                       if lay["single"] else "train/val jsons")}


# ---------------------------------------------------------------- neck / head precision
def quantize_neck_head(model: nn.Module, precision: str, output_convs=()) -> nn.Module:
    """Swap the float convs / deconvs of ``model.neck`` and ``model.bbox_head`` for quantized ones
    (weights copied). ``output_convs``: names (in the head) kept at INT8 when ``precision='binary'``.
    mmdet's CTResNetNeck and CenterNetHead build their convs without a ``conv_cfg``, so the swap is
    the one way to reach them; the model is wrapped in ``QuantScalesAfterInit`` (see
    ``build_config``), so the binary scales follow whatever weights the model's own init leaves."""
    if precision == "fp32":
        return model
    if precision not in KINDS:
        raise ValueError(f"head precision must be one of {KINDS}; got {precision!r}")
    for part in ("neck", "bbox_head"):
        root = getattr(model, part)
        for name, m in list(root.named_modules()):
            for child_name, child in list(m.named_children()):
                full = f"{name}.{child_name}" if name else child_name
                if precision == "binary" and isinstance(child, nn.ReLU):
                    setattr(m, child_name, nn.Identity())  # the binary activation has its own PReLU
                    continue
                # mmcv's wrappers subclass the torch layers; skip layers that are already quantized
                if not isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)) or hasattr(child, "weight_quantizer"):
                    continue
                kind = "int8" if precision == "int8" or (part == "bbox_head" and full in output_convs) else "binary"
                setattr(m, child_name, quantized_copy(child, kind, kind))
        if precision == "binary":
            for m in root.modules():  # mmcv ConvModule keeps its activation as `activate`
                if hasattr(m, "activate") and isinstance(m.activate, nn.ReLU):
                    m.activate = nn.Identity()
    return model


def _register():
    """The builder for quantized neck/head detectors (lazy: ``import tasks.detection`` stays light)."""
    import backbones.openmmlab  # noqa: F401  (mmcv op stand-in and BiNealNet, before anything from mmdet)
    from mmdet.registry import MODELS

    if "BenchQuantNeckHead" in MODELS.module_dict:
        return

    def BenchQuantNeckHead(detector: dict, precision: str, output_convs=()):
        return quantize_neck_head(MODELS.build(detector), precision, tuple(output_convs))

    MODELS.register_module(name="BenchQuantNeckHead", module=BenchQuantNeckHead)


# ---------------------------------------------------------------- config
def _centernet(bb, channels, num_classes):
    return dict(
        type="CenterNet",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True),
        backbone=bb,
        neck=dict(type="CTResNetNeck", in_channels=channels[-1], num_deconv_filters=(256, 128, 64),
                  num_deconv_kernels=(4, 4, 4), use_dcn=False),
        bbox_head=dict(type="CenterNetHead", num_classes=num_classes, in_channels=64, feat_channels=64,
                       loss_center_heatmap=dict(type="GaussianFocalLoss", loss_weight=1.0),
                       loss_wh=dict(type="L1Loss", loss_weight=0.1),
                       loss_offset=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=None,
        test_cfg=dict(topk=100, local_maximum_kernel=3, max_per_img=100))


def _retinanet(bb, channels, num_classes):
    return dict(
        type="RetinaNet",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=MEAN, std=STD, bgr_to_rgb=True, pad_size_divisor=32),
        backbone=bb,
        neck=dict(type="FPN", in_channels=channels, out_channels=256, start_level=1, add_extra_convs="on_input",
                  num_outs=5),
        bbox_head=dict(
            type="RetinaHead", num_classes=num_classes, in_channels=256, stacked_convs=4, feat_channels=256,
            anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[.0, .0, .0, .0], target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1),
                       sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False),
        # score_thr 0 (mmdet: 0.05): keeps the top 100 after NMS even when an early model scores
        # below 0.05, so an evaluation is never empty; lower-score extras cannot lower COCO AP
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=100))


def _pipelines(model, size):
    f = size / 512
    # scale first, so the 512-relative crop below sees what mmdet's 512 crop sees
    down = [dict(type="Resize", scale_factor=f, keep_ratio=True)] if size != 512 else []
    if model == "centernet":
        train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True), *down,
                 dict(type="PhotoMetricDistortion", brightness_delta=32, contrast_range=(0.5, 1.5),
                      saturation_range=(0.5, 1.5), hue_delta=18),
                 dict(type="RandomCenterCropPad", crop_size=(size, size), ratios=(0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3),
                      border=int(128 * f), mean=[0, 0, 0], std=[1, 1, 1], to_rgb=True, test_pad_mode=None),
                 dict(type="Resize", scale=(size, size), keep_ratio=True),
                 dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]
        test = [dict(type="LoadImageFromFile", to_float32=True), *down,
                dict(type="RandomCenterCropPad", ratios=None, border=None, mean=[0, 0, 0], std=[1, 1, 1], to_rgb=True,
                     test_mode=True, test_pad_mode=["logical_or", 31], test_pad_add_pix=1),
                dict(type="LoadAnnotations", with_bbox=True),
                # scale_factor (not in mmdet's list) maps boxes back through our downscale
                dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "border",
                                                      "scale_factor"))]
    else:
        train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
                 dict(type="Resize", scale=(size, size), keep_ratio=True), dict(type="RandomFlip", prob=0.5),
                 dict(type="PackDetInputs")]
        test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(size, size), keep_ratio=True),
                dict(type="LoadAnnotations", with_bbox=True),
                dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"))]
    return train, test


#: reference row: the fp32 backbone frozen at its random init (BatchNorm still normalises with batch
#: statistics); only the float neck and head learn. The AP a trained backbone has to beat.
FROZEN_RANDOM = "frozen-random"


def _milestones(epochs):
    # mmdet CenterNet: lr x0.1 at 90 and 120 of 140 epochs; same fractions of any length
    return sorted({m for m in (round(epochs * 90 / 140), round(epochs * 120 / 140)) if 0 < m < epochs})


def _build_config(task, backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu", variant=None,
                  model="centernet", width=None, head_precision="fp32", init_from=None, **_):
    """A complete mmengine Runner config (model, loaders, loops, CocoMetric) for one detection run."""
    from mmengine.config import Config

    if model not in MODELS_:
        raise ValueError(f"unknown detection model {model!r}; expected one of {MODELS_}")
    common.check_head_precision(head_precision)
    init_cfg = common.pretrained(init_from)
    _register()
    s = SCHEDULES[schedule]
    epochs = s["epochs"] if epochs is None else epochs
    root = Path(data_root).resolve()
    lay = _layout(root)
    classes = _categories(lay["val"][0])
    out_indices = (3,) if model == "centernet" else (0, 1, 2, 3)
    if backbone == FROZEN_RANDOM:  # the reference row: fp32 at its random init, only neck and head learn
        if init_cfg:
            raise BenchError(f"{FROZEN_RANDOM} is a backbone at its random init; it takes no --init-from")
        bb = common.backbone_kwargs(task, "fp32", variant, width, schedule, out_indices=out_indices,
                                    freeze_weights=True)
    else:
        bb = common.backbone_kwargs(task, backbone, variant, width, schedule, out_indices=out_indices)
    channels = common.backbone_channels(bb)
    bb["type"] = "BiNealNet"
    if init_cfg:
        bb["init_cfg"] = init_cfg
    det = (_centernet if model == "centernet" else _retinanet)(bb, channels, len(classes))
    if head_precision != "fp32":
        det = common.quantized_model(dict(type="BenchQuantNeckHead", detector=det, precision=head_precision,
                                          output_convs=list(OUTPUT_CONVS[model])))
    train_pipe, test_pipe = _pipelines(model, s["input_size"])
    n = s["max_images"]

    def dataset(split, pipeline, test_mode):
        ann, img_dir = lay[split]
        d = dict(type="CocoDataset", data_root=str(root), ann_file=str(ann.relative_to(root)),
                 data_prefix=dict(img=str(img_dir.relative_to(root)) + "/"),
                 metainfo=dict(classes=tuple(classes)), pipeline=pipeline, test_mode=test_mode, backend_args=None)
        if not test_mode:
            d["filter_cfg"] = dict(filter_empty_gt=True, min_size=32)
        if n:
            d["indices"] = n
        return d

    workers = s["num_workers"]

    def loader(split, pipeline, train):
        out = dict(batch_size=s["batch_size"] if train else 1, **common.loader_workers(device, workers), drop_last=False,
                   sampler=dict(type="DefaultSampler", shuffle=train),
                   dataset=dataset(split, pipeline, test_mode=not train))
        if train and model == "retinanet":
            out["batch_sampler"] = dict(type="AspectRatioBatchSampler")
        return out

    evaluator = dict(type="CocoMetric", ann_file=str(lay["val"][0]), metric="bbox", format_only=False,
                     backend_args=None)
    optim = dict(type="Adam", lr=s["lr"], weight_decay=0.0)
    wrapper = common.optim_wrapper(device, optim, bb.get("aux_lr_mult", 1.0), clip_grad=dict(max_norm=35, norm_type=2))
    cfg = Config(dict(
        default_scope="mmdet",
        custom_imports=dict(imports=["backbones.openmmlab"], allow_failed_imports=False),
        model=det,
        work_dir=str(work_dir),
        train_dataloader=loader("train", train_pipe, True),
        val_dataloader=loader("val", test_pipe, False),
        test_dataloader=loader("val", test_pipe, False),  # test = val split (no separate test set)
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=epochs, val_interval=s["val_interval"] or epochs + 1),
        val_cfg=dict(type="ValLoop"), test_cfg=dict(type="TestLoop"),
        val_evaluator=evaluator, test_evaluator=evaluator,
        optim_wrapper=wrapper,
        param_scheduler=[
            # warm-up over the first epoch (mmdet: 1000 iterations of a COCO-sized epoch)
            dict(type="LinearLR", start_factor=0.001, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
            dict(type="MultiStepLR", begin=0, end=epochs, by_epoch=True, milestones=_milestones(epochs), gamma=0.1)],
        default_hooks=common.default_hooks(log_interval=10),
        log_processor=dict(type="LogProcessor", window_size=10, by_epoch=True),
        log_level="INFO", load_from=None, resume=False,
        **common.runtime(seed, device),
        bench=dict(schedule=schedule, schedule_label=s["label"], model=model, head_precision=head_precision,
                   width=bb["width"], input_size=s["input_size"], backbone=bb, classes=len(classes),
                   init_from=str(init_from) if init_from else None),
    ))
    if not s["val_interval"]:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    return cfg


@register
class Detection(Task):
    NAME = "detection"
    DESCRIPTION = "CenterNet-R18 (no DCN, the paper's) or RetinaNet+FPN through MMDetection; COCO bbox AP"
    METRIC = {"name": "bbox_AP", "key": "coco/bbox_mAP", "higher_is_better": True}
    SECONDARY_KEYS = ("coco/bbox_mAP_50", "coco/bbox_mAP_75", "coco/bbox_mAP_s", "coco/bbox_mAP_m",
                      "coco/bbox_mAP_l")
    DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "coco-sample"
    SCHEDULES = SCHEDULES
    BASELINES = (FROZEN_RANDOM,)
    DEFAULT_RECIPES = {"binealnet": "adamw", "int8": "adamw", "fp32": "adamw"}
    OPTIONS = {
        "model": option(str, "centernet", list(MODELS_),
                        "detector: centernet (CenterNet-R18 without DCN, the paper's) or retinanet (FPN)"),
        "head_precision": option(str, default_head_precision("detection"), list(KINDS),
                                 "precision of neck and head convs, the same for every backbone"),
        "init_from": option(str, help="checkpoint of a run of ours whose backbone.* weights initialise the backbone"),
    }

    def validate_data(self, root):
        _validate(root)

    def data_info(self, root, schedule=None, **_):
        return _data_info(root, schedule)

    def build_config(self, backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu", variant=None,
                     **options):
        return _build_config(self, backbone, data_root, schedule, work_dir, seed, epochs, device, variant, **options)

    def add_teacher(self, cfg, teacher_model, checkpoint):
        # output-level distillation from the fp32 model (tasks/recipes.py: OutputDistilled), on
        # CenterNet's class heatmap logits (RetinaNet's per-level heads are called once per level)
        if cfg.bench.get("model") != "centernet":
            raise BenchError(f"distillation is defined for CenterNet's heatmap; --model {cfg.bench.get('model')} "
                             "has none: choose a recipe without distillation")
        cfg.model = dict(type="OutputDistilled", model=cfg.model, module="bbox_head.heatmap_head", loss="bce",
                         teacher=dict(model=teacher_model, checkpoint=checkpoint))
        cfg.bench["distillation"] = ("binary cross-entropy of the student's CenterNet heatmap logits to the fp32 "
                                     "teacher's heatmap probabilities, weight 1, added to the detection losses")

    def format_metric(self, key, value):
        # COCO reports -1 where a size class has no ground truth
        return "n/a" if value is not None and value < 0 else super().format_metric(key, value)


