"""HPatches sequences (layout checks, homographies, rescaled evaluation images) and the training
images (random crops of real photos): the matching task's data."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .. import common
from ..base import DataError

REPO = Path(__file__).resolve().parents[2]
IMAGE_EXTS = (".ppm", ".png")
TRAIN_EXTS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp"}
MIN_SIDE = 32  # px: smaller images cannot hold the network's 31 px receptive field

#: default training images: the real photos in ../shared/data when present (COCO-mini and T91),
#: else the embedded COCO sample (a fresh clone offline); the record lists the folders and a hash
SHARED_TRAIN = [REPO.parent / "shared" / "data" / "coco-mini" / "images", REPO.parent / "shared" / "data" / "sr" / "T91"]
SAMPLE_TRAIN = [REPO / "data" / "coco-sample" / "images"]


def train_dirs(train_images) -> list[Path]:
    if not train_images:
        return SHARED_TRAIN if all(d.is_dir() for d in SHARED_TRAIN) else SAMPLE_TRAIN
    return [Path(p).expanduser() for p in str(train_images).split(",") if p]


def _image_index(name: str):
    m = re.fullmatch(r"(\d+)\.(ppm|png)", name, re.IGNORECASE)
    return int(m.group(1)) if m else None


def _is_sequence(d: Path) -> bool:
    return d.is_dir() and any(_image_index(f.name) is not None or f.name.startswith("H_1_") for f in d.iterdir())


def sequences(root) -> list[Path]:
    """The sequence folders of an HPatches-layout root (or the root itself if it is one sequence)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (expected HPatches sequences <seq>/1.ppm|png .. + H_1_k)")
    if _is_sequence(root):
        return [root]
    seqs = sorted(d for d in root.iterdir() if _is_sequence(d))
    if not seqs:
        raise DataError(f"{root}: no HPatches sequence folders (expected <seq>/1.ppm|png, <seq>/2.ppm|png, ... and "
                        "<seq>/H_1_2, ...)")
    return seqs


def read_homography(path: Path) -> np.ndarray:
    try:
        h = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read a homography ({e}); expected a 3x3 matrix (3 lines of 3 numbers)") from None
    expected = "expected a finite, invertible 3x3 matrix of numbers (3 lines of 3)"
    if h.shape != (3, 3):
        raise DataError(f"{path}: {expected}; got shape {h.shape}")
    if not np.isfinite(h).all():
        bad = np.argwhere(~np.isfinite(h))[0]
        raise DataError(f"{path}: {expected}; entry (row {bad[0] + 1}, column {bad[1] + 1}) is {h[tuple(bad)]}")
    if abs(np.linalg.det(h)) < 1e-12:
        raise DataError(f"{path}: {expected}; this one is singular (determinant {np.linalg.det(h):.3g})")
    return h


def _sequence_files(seq: Path) -> tuple[dict, dict]:
    """({index: image path}, {k: H_1_k path}); DataError for a missing image 1 or H file."""
    images = {}
    for f in sorted(seq.iterdir()):
        i = _image_index(f.name)
        if i is not None:
            if i in images:
                raise DataError(f"{f}: image {i} exists twice ({images[i].name} and {f.name})")
            images[i] = f
    if 1 not in images:
        raise DataError(f"{seq}: no reference image 1.ppm or 1.png")
    if len(images) < 2:
        raise DataError(f"{seq}: only image 1; expected images 2..6 with their H_1_k")
    hs = {}
    for k in sorted(images):
        if k != 1:
            hs[k] = seq / f"H_1_{k}"
            if not hs[k].is_file():
                raise DataError(f"{hs[k]}: homography file missing (image {images[k].name} needs it)")
    return images, hs


def _open_image(path: Path, check_only=False):
    from PIL import Image
    size = common.check_image(path)[0]
    if not check_only:
        with Image.open(path) as im:
            im = im.convert("RGB")
    if min(size) < MIN_SIDE:
        raise DataError(f"{path}: image is {size[0]}x{size[1]} px; the network needs at least {MIN_SIDE} px a side")
    return size if check_only else im


def validate_data(root) -> None:
    for seq in sequences(root):
        images, hs = _sequence_files(seq)
        for f in images.values():
            _open_image(f, check_only=True)
        for h in hs.values():
            read_homography(h)


def scale_matrix(sx: float, sy: float) -> np.ndarray:
    """Pixel-centre coordinates of an image resized by (sx, sy): x -> sx (x + 0.5) - 0.5."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _load_resized(path: Path, max_side):
    """(uint8 3xHxW tensor, 3x3 scale matrix A) with the longer side at most ``max_side``."""
    from PIL import Image
    im = _open_image(path)
    w, h = im.size
    s = 1.0 if not max_side or max(w, h) <= max_side else max_side / max(w, h)
    if s < 1:
        im = im.resize((max(MIN_SIDE, round(w * s)), max(MIN_SIDE, round(h * s))), Image.BILINEAR)
    a = scale_matrix(im.size[0] / w, im.size[1] / h)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous(), a


class HPatchesSequences(torch.utils.data.Dataset):
    """One item per sequence: its images (uint8, resized) and the rescaled H_1_k."""

    def __init__(self, root, max_side=None):
        self.seqs = sequences(root)
        self.max_side = max_side
        self.metainfo = {"sequences": [s.name for s in self.seqs]}

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        seq = self.seqs[i]
        files, hs = _sequence_files(seq)
        loaded = {k: _load_resized(f, self.max_side) for k, f in files.items()}
        a1 = loaded[1][1]
        homs = {k: torch.from_numpy(loaded[k][1] @ read_homography(p) @ np.linalg.inv(a1)) for k, p in hs.items()}
        return {"inputs": {k: v[0] for k, v in loaded.items()},
                "data_samples": {"name": seq.name, "H": homs}}


def sequence_collate(batch):
    """Sequences as they are (images of one sequence may differ in size): lists, not stacks."""
    return {"inputs": [b["inputs"] for b in batch], "data_samples": [b["data_samples"] for b in batch]}


def train_image_files(dirs) -> list[Path]:
    files = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise DataError(f"{d}: training image folder not found (--train-images)")
        found = sorted(f for f in d.rglob("*") if f.suffix.lower() in TRAIN_EXTS)
        if not found:
            raise DataError(f"{d}: no training images (expected files ending in {sorted(TRAIN_EXTS)})")
        files += found
    return files


class RandomCrops(torch.utils.data.Dataset):
    """``samples`` random square crops of real images (decoded once, shorter side scaled down to
    ``short_side``); the second view is made on the model's device (``R2D2Model._views``)."""

    def __init__(self, dirs, crop, samples, short_side):
        from PIL import Image
        self.crop, self.samples = crop, samples
        self.images = []
        for f in train_image_files(dirs):
            im = _open_image(f)
            s = min(1.0, short_side / min(im.size))
            if s < 1:
                im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BILINEAR)
            if min(im.size) >= crop:
                self.images.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1))
        if not self.images:
            raise DataError(f"{dirs[0]}: no training image has a side of at least {crop} px after scaling")

    def __len__(self):
        return self.samples

    def __getitem__(self, i):
        im = self.images[int(torch.randint(len(self.images), ()))]
        y = int(torch.randint(im.shape[1] - self.crop + 1, ()))
        x = int(torch.randint(im.shape[2] - self.crop + 1, ()))
        return {"inputs": im[:, y:y + self.crop, x:x + self.crop].contiguous()}


def register(DATASETS, FUNCTIONS):
    DATASETS.register_module(name="HPatchesSequences", module=HPatchesSequences)
    FUNCTIONS.register_module(name="sequence_collate", module=sequence_collate)
    DATASETS.register_module(name="MatchingRandomCrops", module=RandomCrops)
