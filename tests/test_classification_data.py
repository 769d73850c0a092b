"""Classification data formats: ImageFolder and CIFAR-10 python batches give the same tensors."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import DataError
import tasks
from tasks import classification as cls

CLS = tasks.get("classification")

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "cifar10-sample"


def _write_batches(root: Path, per_class_train=2, per_class_test=1):
    """The torchvision download layout, written from real images of the embedded sample."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    classes = sorted(p.name for p in (SAMPLE / "train").iterdir())

    def rows(split, k):
        xs, ys = [], []
        for label, c in enumerate(classes):
            for f in sorted((SAMPLE / split / c).iterdir())[:k]:
                xs.append(np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1).reshape(-1))
                ys.append(label)
        return np.stack(xs).astype(np.uint8), ys

    x, y = rows("train", per_class_train * 5)
    for i in range(5):  # five train batches, interleaved as in the real files
        sel = slice(i, None, 5)
        with open(d / f"data_batch_{i + 1}", "wb") as fh:
            pickle.dump({b"data": x[sel], b"labels": y[sel]}, fh)
    xt, yt = rows("test", per_class_test)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({b"data": xt, b"labels": yt}, fh)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in classes]}, fh)
    return root


def test_cifar_python_batches_match_imagefolder(tmp_path):
    root = _write_batches(tmp_path)
    CLS.validate_data(root)
    x, y, names = cls.load_split(str(root), "test")
    xf, yf, names_f = cls.load_split(str(SAMPLE), "test", per_class=1)
    assert names == names_f
    assert torch.equal(y, yf) and torch.equal(x, xf)
    xtr, ytr, _ = cls.load_split(str(root), "train", per_class=3)
    assert xtr.shape == (30, 3, 32, 32) and torch.bincount(ytr).tolist() == [3] * 10


def test_imagefolder_larger_images_are_resized_and_cropped(tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (80, 48), (10, 200, 30)).save(tmp_path / split / c / "x.png")
    CLS.validate_data(tmp_path)
    x, y, names = cls.load_split(str(tmp_path), "test", size=32)
    assert names == ["a", "b"] and x.shape == (2, 3, 32, 32) and (x[:, 1] == 200).all()


def test_mismatched_classes_and_broken_batches(tmp_path):
    for split, c in (("train", "a"), ("test", "b")):
        (tmp_path / split / c).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / split / c / "x.png")
    with pytest.raises(DataError, match="different class folders"):
        CLS.validate_data(tmp_path)
    broken = _write_batches(tmp_path / "cifar")
    (broken / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        cls.load_split(str(broken), "train")
