"""Classification: BiNealNet (CIFAR stem) + global pool + float linear head, top-1 accuracy.

Data formats (``--data ROOT``):
  * ImageFolder: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (or ``ROOT/val/<class>/*``),
    e.g. ``../shared/data/cifar10-jpeg`` or an ImageNet folder;
  * CIFAR-10 python batches (torchvision's download layout): ``ROOT/data_batch_{1..5}`` +
    ``ROOT/test_batch``, or the same inside ``ROOT/cifar-10-batches-py/``.
Images are decoded once into one uint8 tensor; augmentation (pad-4 random crop, flip) runs in
the data preprocessor on the training device, so a GPU run keeps the data path on the GPU.
"""
from __future__ import annotations

import functools
import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import backbones

from . import common, recipes
from .base import DataError, Task, option, register

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
HEAD_PRECISION = backbones.presets.TASK_HEAD_PRECISIONS["classification"]  # the linear head (recorded)

# per_class_*: images per class taken (first by file name; None = all). lr is for batch_size.
# paper = the seed's schedule (400 epochs, batch 128, SGD 0.1 with SGDR warm restarts).
SCHEDULES = {
    "smoke": dict(epochs=1, batch_size=32, lr=0.05, per_class_train=20, per_class_test=10, input_size=32,
                  sgdr_periods=None, label="smoke (seconds; CI check, not an accuracy)"),
    "short": dict(epochs=4, batch_size=64, lr=0.1, per_class_train=300, per_class_test=100, input_size=32,
                  sgdr_periods=None, label="short (3,000 train / 1,000 test images, 4 epochs, cosine; fits 2 CPU cores)"),
    "sweep": dict(epochs=4, batch_size=64, lr=0.1, per_class_train=100, per_class_test=100, input_size=32,
                  sgdr_periods=None, label="sweep (1,000 train / 1,000 test images, 4 epochs, batch 64: the CPU "
                  "recipe sweep; a tiny budget, a first signal only)"),
    "gpu": dict(epochs=12, batch_size=256, lr=0.2, per_class_train=None, per_class_test=None, input_size=32,
                sgdr_periods=None, label="gpu (full 50k train / 10k test, 12 epochs, cosine, batch 256, bf16 AMP; "
                "short next to the seed's 400)"),
    "gpu100": dict(epochs=100, batch_size=512, lr=0.4, per_class_train=None, per_class_test=None, input_size=32,
                   sgdr_periods=None, label="gpu100 (full 50k train / 10k test, 100 epochs, cosine, batch 512, bf16 "
                   "AMP, data resident on the GPU; a quarter of the seed's 400)"),
    # backbone checkpoints for the dense tasks' --init-from (no ImageNet here): CIFAR-10 upsampled to
    # 96 px through the ImageNet stem, at detection's default widths (backbones.presets.TASK_WIDTHS)
    "pretrain-short": dict(epochs=4, batch_size=64, lr=0.1, per_class_train=300, per_class_test=100, input_size=96,
                           sgdr_periods=None,
                           label="pretrain-short (3,000 train / 1,000 test images at 96 px, ImageNet stem, 4 epochs; "
                           "backbones for --init-from on CPU)"),
    "pretrain": dict(epochs=12, batch_size=256, lr=0.2, per_class_train=None, per_class_test=None, input_size=96,
                     sgdr_periods=None,
                     label="pretrain (full CIFAR-10 at 96 px, ImageNet stem, 12 epochs, batch 256; backbones for "
                     "--init-from)"),
    # the dense tasks' backbones on a GPU: the device tool carries at most 64 MiB a call, so the
    # pretraining beside the dense data is on the first 2,000 / 500 images per class
    "pretrain-gpu": dict(epochs=30, batch_size=256, lr=0.2, per_class_train=2000, per_class_test=500, input_size=96,
                         sgdr_periods=None, label="pretrain-gpu (20,000 train / 5,000 test CIFAR-10 images at 96 px, "
                         "ImageNet stem, 30 epochs, batch 256; backbones for --init-from)"),
    "pretrain-smoke": dict(epochs=1, batch_size=32, lr=0.05, per_class_train=20, per_class_test=10, input_size=96,
                           sgdr_periods=None, label="pretrain-smoke (seconds at 96 px through the ImageNet stem; CI "
                           "check of --init-from, not an accuracy)"),
    "paper": dict(epochs=400, batch_size=128, lr=0.1, per_class_train=None, per_class_test=None, input_size=32,
                  sgdr_periods=[10, 30, 90, 270], label="paper (the seed's: 400 epochs, batch 128, SGD 0.1, SGDR)"),
}
CIFAR_MEAN, CIFAR_STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)


# ---------------------------------------------------------------- data
def _split_dirs(root: Path):
    test = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    return root / "train", test


def _cifar_batches_dir(root: Path):
    for d in (root, root / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file() and (d / "test_batch").is_file():
            return d
    return None


def _validate(root) -> None:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data directory not found (expected ImageFolder train/<class>/* + test/<class>/*, "
                        "or CIFAR-10 python batches)")
    if _cifar_batches_dir(root):
        return
    train, test = _split_dirs(root)
    if not train.is_dir() or test is None:
        raise DataError(f"{root}: expected subfolders train/ and test/ (or val/) with one folder per class, "
                        "or CIFAR-10 python batches (data_batch_1..5, test_batch)")
    for split in (train, test):
        classes = sorted(d for d in split.iterdir() if d.is_dir())
        if not classes:
            raise DataError(f"{split}: no class folders (expected {split}/<class>/<image>)")
        for c in classes:
            if not any(f.suffix.lower() in IMAGE_EXTS for f in c.iterdir()):
                raise DataError(f"{c}: class folder has no images (expected files ending in {sorted(IMAGE_EXTS)})")
    if [c.name for c in sorted(train.iterdir()) if c.is_dir()] != [c.name for c in sorted(test.iterdir()) if c.is_dir()]:
        raise DataError(f"{root}: train/ and {test.name}/ have different class folders")


def _list_images(split_dir: Path, per_class):
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    items = []
    for label, c in enumerate(classes):
        files = sorted(f for f in (split_dir / c).iterdir() if f.suffix.lower() in IMAGE_EXTS)
        items += [(f, label) for f in files[:per_class]]
    return classes, items


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):  # ImageNet-style folders: shorter side to size, centre crop
                s = size / min(im.size)
                im = im.resize((max(size, round(im.size[0] * s)), max(size, round(im.size[1] * s))), Image.BILINEAR)
                left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({e.__class__.__name__}: {e})") from None


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10 batches are pickles, and a pickle can run any code: this one builds only numpy
    arrays (plus the dicts, lists, strings and numbers the batches hold) and refuses anything else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):  # protocol 2 writes bytes as encode(str, 'latin1')
            return _latin1_bytes
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only arrays, "
                                     "lists and strings")


def _latin1_bytes(text, encoding):
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode(..., {encoding!r}): a CIFAR-10 batch's bytes are latin1")
    return text.encode("latin1")


def _load_pickle(path: Path):
    try:
        with open(path, "rb") as fh:
            d = _ArraysOnly(fh, encoding="bytes").load()
    except Exception as e:  # truncated, not a pickle, or refused: all mean "not a CIFAR-10 batch"
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e.__class__.__name__}: {e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (expected a dict, got {type(d).__name__})")
    return d


@functools.lru_cache(maxsize=4)  # val and test loaders share the decoded split
def load_split(root, split: str, per_class=None, size: int = 32):
    """(uint8 tensor N x 3 x size x size, int64 labels, class names) of 'train' or 'test'."""
    root = Path(root)
    batches = _cifar_batches_dir(root)
    if batches:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        xs, ys = [], []
        for f in files:
            d = _load_pickle(batches / f)
            try:
                xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels = np.asarray(d[b"labels"], dtype=np.int64)
            except (KeyError, ValueError, TypeError) as e:
                raise DataError(f"{batches / f}: not a CIFAR-10 python batch (data/labels: {e})") from None
            if len(labels) != len(xs[-1]):
                raise DataError(f"{batches / f}: {len(labels)} labels for {len(xs[-1])} images")
            bad = np.flatnonzero((labels < 0) | (labels > 9))
            if len(bad):
                raise DataError(f"{batches / f}: label {labels[bad[0]]} at index {bad[0]} is outside 0-9 "
                                f"({len(bad)} such labels); CIFAR-10 has 10 classes")
            ys += labels.tolist()
        x, y = np.concatenate(xs), np.asarray(ys)
        if per_class:
            keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
            keep.sort()
            x, y = x[keep], y[keep]
        meta = batches / "batches.meta"
        names = [str(i) for i in range(10)]
        if meta.is_file():
            try:
                names = [n.decode() for n in _load_pickle(meta)[b"label_names"]]
            except (KeyError, AttributeError, TypeError) as e:
                raise DataError(f"{meta}: expected label_names, a list of 10 byte strings ({e})") from None
        return torch.from_numpy(x), torch.from_numpy(y).long(), names
    train, test = _split_dirs(root)
    classes, items = _list_images(train if split == "train" else test, per_class)
    x = np.stack([_decode(f, size) for f, _ in items]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor([l for _, l in items]), classes


def _data_info(root, schedule="short") -> dict:
    """Name, path, image count and a sha256 over the image files used by ``schedule``."""
    root = Path(root)
    s = SCHEDULES[schedule]
    h, n = hashlib.sha256(), 0
    batches = _cifar_batches_dir(root)
    if batches:
        for f in sorted(batches.glob("*_batch*")):
            h.update(f.read_bytes())
        n = None
    else:
        train, test = _split_dirs(root)
        for split, k in ((train, s["per_class_train"]), (test, s["per_class_test"])):
            for f, _ in _list_images(split, k)[1]:
                h.update(f.relative_to(root).as_posix().encode())
                h.update(f.read_bytes())
                n += 1
    return {"name": root.name, "path": str(root), "images": n, "sha256": h.hexdigest(),
            "subset": {"per_class_train": s["per_class_train"], "per_class_test": s["per_class_test"]}}


class InMemoryDataset(torch.utils.data.Dataset):
    """A decoded split held as one uint8 tensor (on the training device when ``device`` is cuda);
    a batch is one indexing op (``__getitems__``), not one item at a time and a stack."""

    def __init__(self, root, split, per_class=None, input_size=32, device="cpu"):
        self.images, self.labels, self.classes = load_split(root, split, per_class, input_size)
        if device == "cuda":  # after mmengine's dist init: the current device is this rank's
            here = torch.device("cuda", torch.cuda.current_device())
            self.images, self.labels = self.images.to(here), self.labels.to(here)
        self.metainfo = {"classes": self.classes}

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"inputs": self.images[i], "data_samples": self.labels[i]}

    def __getitems__(self, indices):  # the DataLoader's batched fetch (collated by batch_collate)
        i = torch.as_tensor(indices, device=self.labels.device)
        return {"inputs": self.images[i], "data_samples": self.labels[i]}


def batch_collate(batch):
    """A batch already gathered by ``InMemoryDataset.__getitems__`` passes through as it is."""
    if isinstance(batch, dict):
        return batch
    from mmengine.dataset import default_collate
    return default_collate(batch)


# ---------------------------------------------------------------- model
def _register():
    """mmengine registrations (imported lazily so ``import tasks.classification`` stays light)."""
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseDataPreprocessor, BaseModel
    from mmengine.registry import DATASETS, FUNCTIONS, METRICS, MODELS

    if "BenchClassifier" in MODELS.module_dict:
        return
    FUNCTIONS.register_module(name="bench_batch_collate", module=batch_collate)

    @MODELS.register_module()
    class ClsDataPreprocessor(BaseDataPreprocessor):
        """To device, float, normalise; pad-4 random crop + horizontal flip while training."""

        def __init__(self, augment=True, channels_last=False):
            super().__init__()
            self.augment, self.channels_last = augment, channels_last
            self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, data, training=False):
            x = data["inputs"]
            x = torch.stack(x) if isinstance(x, (list, tuple)) else x
            y = data["data_samples"]
            y = torch.stack(y) if isinstance(y, (list, tuple)) else y
            x, y = x.to(self.device, non_blocking=True).float(), y.to(self.device, non_blocking=True)
            x = (x - self.mean) / self.std
            if training and self.augment:
                from mmengine.dist import get_dist_info
                n, _, h, w = x.shape
                # ranks share the seed: each draws the global batch's numbers and takes its own samples'
                # (the sampler deals samples out round-robin), so N processes augment like one
                rank, world = get_dist_info()
                x = F.pad(x, (4, 4, 4, 4))
                i = torch.randint(0, 9, (n * world,), device=x.device)[rank::world]
                j = torch.randint(0, 9, (n * world,), device=x.device)[rank::world]
                rows = (i[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, 3, h, w + 8)
                x = x.gather(2, rows)
                cols = (j[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, 3, h, w)
                x = x.gather(3, cols)
                flip = torch.rand(n * world, device=x.device)[rank::world] < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return {"inputs": x, "data_samples": y}

    @MODELS.register_module()
    class BenchClassifier(BaseModel):
        """Backbone (last stage) + global average pool + linear head."""

        def __init__(self, backbone: dict, num_classes: int, data_preprocessor=None, compile=False, teacher=None,
                     channels_last=False):
            super().__init__(data_preprocessor=data_preprocessor)
            self.backbone = backbones.BiNealNet(**backbone)
            self.head = nn.Linear(self.backbone.out_channels[-1], num_classes)
            if channels_last:  # NHWC convs on CUDA (cuDNN's fast layout for bf16)
                self.to(memory_format=torch.channels_last)
            self._logits = torch.compile(self._logits_eager) if compile else self._logits_eager
            # kept outside the module tree: not trained, not saved, not counted in the cost
            self.__dict__["_teacher"] = recipes.load_teacher(teacher) if teacher else None

        def _logits_eager(self, x):
            return self.head(F.adaptive_avg_pool2d(self.backbone(x)[-1], 1).flatten(1))

        def forward(self, inputs, data_samples=None, mode="tensor"):
            # compiled for training only: evaluation in eager mode costs no recompile (BatchNorm's
            # mode and the test set's last, smaller batch would each be another graph)
            logits = self._logits(inputs) if self.training else self._logits_eager(inputs)
            if mode == "loss" and self._teacher is not None:
                # ReActNet's distribution loss: cross-entropy to the float teacher's softmax
                t = self._teacher.to(inputs.device).eval()
                with torch.no_grad():
                    target = F.softmax(t._logits_eager(inputs).float(), dim=1)
                return {"loss": -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()}
            if mode == "loss":
                return {"loss": F.cross_entropy(logits.float(), data_samples)}
            if mode == "predict":
                return [(logits.float().detach(), data_samples)]
            return logits

    @METRICS.register_module()
    class TopKAccuracy(BaseMetric):
        default_prefix = ""

        def process(self, data_batch, data_samples):
            for logits, labels in data_samples:
                top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
                labels = labels.cpu()
                self.results.append(((top5[:, 0] == labels).sum().item(),
                                     (top5 == labels[:, None]).any(1).sum().item(), len(labels)))

        def compute_metrics(self, results):
            n = sum(r[2] for r in results)
            return {"top1": sum(r[0] for r in results) / n, "top5": sum(r[1] for r in results) / n}

    DATASETS.register_module(name="BenchInMemoryDataset", module=InMemoryDataset)


def _class_names(root):
    root = Path(root)
    if _cifar_batches_dir(root):
        return [str(i) for i in range(10)]
    return sorted(d.name for d in _split_dirs(root)[0].iterdir() if d.is_dir())


@register
class Classification(Task):
    NAME = "classification"
    DESCRIPTION = "BiNealNet (CIFAR stem below 64 px) + global pool + float linear head; top-1"
    METRIC = {"name": "top1", "key": "top1", "higher_is_better": True}
    SECONDARY_KEYS = ("top5",)
    DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "cifar10-sample"
    SCHEDULES = SCHEDULES
    #: the best recipe per precision in the recorded sweep (scripts/sweep_classification.sh; records
    #: results/classification/*_sweep_*; table results/classification.md, schedule `sweep`)
    DEFAULT_RECIPES = {"binealnet": "adamw-kd", "int8": "adamw", "fp32": "adamw"}
    OPTIONS = {
        "compile": option(lambda v: {"true": True, "false": False}[v.lower()], False, ["true", "false"],
                          "torch.compile the network (default off: at our schedules compile time outweighs the gain)"),
    }

    def validate_data(self, root):
        _validate(root)

    def data_info(self, root, schedule="short", **_):
        return _data_info(root, schedule)

    def build_config(self, backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu", variant=None,
                     width=None, compile=False, **_):
        from mmengine.config import Config

        _register()
        s = SCHEDULES[schedule]
        epochs = s["epochs"] if epochs is None else epochs
        bb = common.backbone_kwargs(self, backbone, variant, width, schedule,
                                    stem="cifar" if s["input_size"] <= 64 else "imagenet", out_indices=(3,))
        n_classes = len(_class_names(data_root))
        # compiled training drops the epoch's last, smaller batch (one shape, one graph)
        loader = lambda split, per_class, shuffle: dict(  # noqa: E731
            batch_size=s["batch_size"], num_workers=0, persistent_workers=False, drop_last=bool(compile and shuffle),
            sampler=dict(type="DefaultSampler", shuffle=shuffle),
            collate_fn=dict(type="bench_batch_collate"),
            dataset=dict(type="BenchInMemoryDataset", root=str(data_root), split=split, per_class=per_class,
                         input_size=s["input_size"], device=device))
        cuda = device == "cuda"
        if s["sgdr_periods"]:
            sched = [dict(type="CosineRestartLR", periods=s["sgdr_periods"],
                          restart_weights=[1] * len(s["sgdr_periods"]), eta_min=0, by_epoch=True)]
        else:
            sched = [dict(type="CosineAnnealingLR", T_max=epochs, eta_min=0, by_epoch=True,
                          convert_to_iter_based=True)]
        optim = dict(type="SGD", lr=s["lr"], momentum=0.9, weight_decay=5e-4, nesterov=True)
        return Config(dict(
            default_scope="mmengine",
            model=dict(type="BenchClassifier", backbone=bb, num_classes=n_classes, compile=bool(compile),
                       channels_last=cuda, data_preprocessor=dict(type="ClsDataPreprocessor", channels_last=cuda)),
            work_dir=str(work_dir),
            train_dataloader=loader("train", s["per_class_train"], True),
            val_dataloader=loader("test", s["per_class_test"], False),
            test_dataloader=loader("test", s["per_class_test"], False),
            train_cfg=dict(by_epoch=True, max_epochs=epochs,
                           val_interval=max(1, epochs // 4) if epochs > 4 else epochs),
            val_cfg=dict(), test_cfg=dict(),
            val_evaluator=dict(type="TopKAccuracy"), test_evaluator=dict(type="TopKAccuracy"),
            optim_wrapper=common.optim_wrapper(device, optim, bb.get("aux_lr_mult", 1.0)),
            param_scheduler=sched,
            default_hooks=common.default_hooks(),
            **common.runtime(seed, device),
            bench=dict(schedule=schedule, schedule_label=s["label"], head_precision=HEAD_PRECISION, backbone=bb,
                       width=bb["width"], input_size=s["input_size"]),
        ))

    def add_teacher(self, cfg, teacher_model, checkpoint):
        cfg.model["teacher"] = dict(model=teacher_model, checkpoint=checkpoint)

    def forward_for_cost(self, model, x):
        return model._logits_eager(x)


