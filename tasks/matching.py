"""Feature matching: an R2D2-style dense detector/descriptor, evaluated on HPatches by MMA and
homography accuracy, with kornia doing the matching and the geometry.

Network (``R2D2Net``, L2-Net-like as R2D2's, kept small for CPU): full resolution throughout,
dilations instead of strides, so keypoints are located to the pixel. With ``c = 8 x width``:

    backbone: stem 3x3 conv 3->c (float, as BiNealNet's stem) + BN, then five 3x3 blocks
              (c, d1) (2c, d2) (2c, d2) (4c, d4) (4c, d4)  [channels, dilation], each
              conv -> BN -> + shortcut (identity, or the input repeated to the wider width) -> ReLU
              (no ReLU when activations are binary: the binary quantizer has its own PReLU);
    head:     ``desc`` 1x1 conv 4c->4c (the descriptor, L2-normalised) and ``score`` 1x1 conv
              4c->2 on the squared pre-normalisation descriptor (R2D2's trick) -> sigmoid ->
              repeatability and reliability maps.

Precision: ``binealnet`` = binary body with the last two output layers (``head.desc``,
``head.score``) at INT8, width 2.0; ``int8`` = everything INT8 but the stem, width 1.0; ``fp32``.
The same topology for all three.

kornia: ``R2D2Feature`` is a ``kornia.feature.LocalFeature`` (``R2D2Detector`` + ``R2D2Descriptor``;
its ``forward`` runs the network once for both), returning LAFs, responses and descriptors in
kornia's conventions. Keypoints: 3x3 non-maximum suppression on repeatability x reliability, a
4 px border dropped, top-k. Matching: ``kornia.feature.match_mnn`` (primary) and ``match_snn``
(Lowe's ratio test, 0.8); homography: ``kornia.geometry.ransac.RANSAC`` (inlier threshold 3 px, 2,048 samples, seeded).
The reference row ``sift`` is ``kornia.feature.SIFTFeature`` (grey image, RootSIFT) through the
same matchers and RANSAC; it has nothing to train.

Training (self-supervised): random crops of real images; the second view is the crop warped by a
random homography (rotation, scale, corner jitter; ``kornia.geometry.warp_perspective``), both
views photometrically jittered (``kornia.augmentation.ColorJitter``), so the dense correspondence
is known. Losses, summed:

* ``loss_desc``: InfoNCE (temperature 0.05) over correspondences on a grid (stride 8 px, random
  offset) in view 1: the positive is the warped point in view 2 (bilinear descriptor); negatives
  are the other grid points' correspondents (>= 8 px away) plus 8 hard ones on a 4 px ring
  around the positive. Both directions.
* ``loss_rel`` (R2D2's AP-weighted reliability with the InfoNCE probability of the true match,
  P, in place of AP): ``1 - (P * R + 0.5 * (1 - R))`` at the grid points of both views (P
  detached, so R learns where the descriptor can be trusted).
* ``loss_cosim`` + ``loss_peaky`` (R2D2's repeatability): 1 - cosine similarity of 8x8 patches
  (stride 4) of view 1's repeatability and view 2's warped back; 1 - mean(max - mean) of each
  repeatability map in 9x9 windows.

Evaluation (HPatches layout: ``ROOT/<seq>/{1..6}.ppm|png`` + ``H_1_k``, 3x3 in plain text mapping
pixels of image 1 to image k; ``ROOT`` may also be one sequence folder). Images larger than the
schedule's ``eval_max_side`` are downscaled (PIL bilinear, antialiased) and each H rescaled
exactly, ``H' = A_k H A_1^-1`` with ``A = diag(s_x, s_y, 1)`` in pixel-corner coordinates (pixel
centre x -> s (x + 0.5) - 0.5); thresholds are pixels of the evaluated images. For each pair
(1, k): MMA@t = the fraction of matches whose keypoint in image 1, mapped by the true H, lies
within t px of its match in image k (D2-Net's definition), averaged over pairs; a pair with no
match scores 0 (a failure, never a crash). Homography accuracy @e = the fraction of pairs whose
RANSAC estimate maps image 1's four corners within a mean e px of the true H's (fewer than 4
matches or a failed RANSAC: a miss). Also matches per pair, keypoints per image, ms per image
(feature extraction), and all of it for viewpoint (``v_``) and illumination (``i_``) sequences apart.
"""
from __future__ import annotations

import hashlib
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.precision import uniform_kind

from . import common
from .base import DataError, Task, option, register

REPO = Path(__file__).resolve().parent.parent
IMAGE_EXTS = (".ppm", ".png")
TRAIN_EXTS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp"}
MIN_SIDE = 32  # px: smaller images cannot hold the network's 31 px receptive field
MMA_THRESHOLDS = tuple(range(1, 11))
HOM_THRESHOLDS = (1, 3, 5)
RATIO = 0.8  # Lowe's ratio for match_snn
RANSAC_TH = 3.0  # px, kornia RANSAC inlier threshold
# 2,048 minimal samples (kornia's default is 20,480): the same budget for every method, ~0.15 s a call on CPU
RANSAC_BUDGET = dict(batch_size=512, max_iter=4)
BORDER = 4  # px without keypoints (padding effects)
BASE_CHANNELS = 8
# (channel multiple of c, dilation) of the body's blocks
BODY = ((1, 1), (2, 2), (2, 2), (4, 4), (4, 4))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

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
                eval_max_side=None, num_features=5000, cost_size=(480, 640),
                label="gpu (25 epochs x 250 iterations of 16 192x192 pairs; full-size eval, top-5000)"),
}


# ---------------------------------------------------------------- data
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


# ---------------------------------------------------------------- network
class Block(nn.Module):
    def __init__(self, cin, cout, dilation, w, a):
        super().__init__()
        from backbones.layers import qconv
        self.conv = qconv(cin, cout, 3, padding=dilation, dilation=dilation, bias=False, w=w, a=a,
                          a_unsigned=a == "int8")  # int8 inputs follow a ReLU: >= 0
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.Identity() if a == "binary" else nn.ReLU(inplace=True)
        self.repeat = cout // cin

    def forward(self, x):
        short = x if self.repeat == 1 else x.repeat(1, self.repeat, 1, 1)
        return self.act(self.bn(self.conv(x)) + short)


class Backbone(nn.Module):
    def __init__(self, c, prec):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.Identity() if prec == "binary" else nn.ReLU(inplace=True))
        blocks, cin = [], c
        for mult, dil in BODY:
            blocks.append(Block(cin, c * mult, dil, prec, prec))
            cin = c * mult
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = cin

    def forward(self, x):
        return self.blocks(self.stem(x))


class Head(nn.Module):
    def __init__(self, cin, dim, prec):
        super().__init__()
        from backbones.layers import qconv
        self.desc = qconv(cin, dim, 1, w=prec, a=prec)  # signed input (binary body has no ReLU)
        self.score = qconv(dim, 2, 1, w=prec, a=prec, a_unsigned=prec == "int8")  # squared: >= 0

    def forward(self, f):
        d = self.desc(f)
        s = torch.sigmoid(self.score(d * d))
        return F.normalize(d, dim=1), s[:, :1], s[:, 1:]


def dense_maps(model, img):
    """(descriptors BxDxHxW, repeatability Bx1xHxW, reliability Bx1xHxW) of images in [0, 1]."""
    mean = img.new_tensor(MEAN).view(1, 3, 1, 1)
    std = img.new_tensor(STD).view(1, 3, 1, 1)
    return model.head(model.backbone((img - mean) / std))


def sample_desc(desc, xy):
    """Bilinear descriptors (N x D, re-normalised) of a 1xDxHxW map at pixel-centre coords xy (N x 2)."""
    h, w = desc.shape[-2:]
    g = torch.stack([(xy[:, 0] + 0.5) / w * 2 - 1, (xy[:, 1] + 0.5) / h * 2 - 1], -1).view(1, 1, -1, 2)
    return F.normalize(F.grid_sample(desc, g.to(desc.dtype), align_corners=False)[0, :, 0].t(), dim=1)


def detect(score, num_features, border=BORDER):
    """Top-k 3x3 local maxima of a Bx1xHxW score: (xy BxNx2, responses BxN); slots beyond the
    maxima found are zero (kornia's unfilled-slot convention)."""
    b, _, h, w = score.shape
    peak = (score == F.max_pool2d(score, 3, 1, 1)) & (score > 0)
    keep = torch.zeros_like(peak)
    keep[..., border:h - border, border:w - border] = True
    s = torch.where(peak & keep, score, torch.zeros_like(score)).flatten(1)
    k = min(num_features, s.shape[1])
    val, idx = s.topk(k, dim=1)
    xy = torch.stack([idx % w, idx // w], -1).to(score.dtype)
    filled = val > 0
    return xy * filled[..., None], val * filled


class R2D2Detector(nn.Module):
    """kornia detector: ``forward(img, mask=None) -> (lafs BxNx2x3, responses BxN)``."""

    def __init__(self, model, num_features=1000, scale=8.0):
        super().__init__()
        self.model, self.num_features, self.scale = model, num_features, scale

    def from_maps(self, rep, rel, mask=None):
        from kornia.feature import laf_from_center_scale_ori
        score = rep * rel
        if mask is not None:
            score = score * mask
        xy, resp = detect(score, self.num_features)
        scale = (resp > 0).to(xy.dtype)[..., None, None] * self.scale
        return laf_from_center_scale_ori(xy, scale, torch.zeros_like(resp)[..., None]), resp

    def forward(self, img, mask=None):
        _, rep, rel = dense_maps(self.model, img)
        return self.from_maps(rep, rel, mask)


class R2D2Descriptor(nn.Module):
    """kornia descriptor: ``forward(img, lafs) -> descriptors BxNxD`` sampled at the LAF centres."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @staticmethod
    def from_map(desc, lafs):
        from kornia.feature import get_laf_center
        xy = get_laf_center(lafs)
        return torch.stack([sample_desc(desc[i:i + 1], xy[i]) for i in range(len(desc))])

    def forward(self, img, lafs):
        return self.from_map(dense_maps(self.model, img)[0], lafs)


def _r2d2_feature_cls():
    from kornia.feature import LocalFeature

    class R2D2Feature(LocalFeature):
        """``LocalFeature(R2D2Detector, R2D2Descriptor)`` whose forward runs the network once."""

        def __init__(self, model, num_features=1000):
            super().__init__(R2D2Detector(model, num_features), R2D2Descriptor(model))

        def forward(self, img, mask=None):
            desc, rep, rel = dense_maps(self.detector.model, img)
            lafs, resp = self.detector.from_maps(rep, rel, mask)
            return lafs, resp, self.descriptor.from_map(desc, lafs)

    return R2D2Feature


def r2d2_feature(model, num_features=1000):
    """A ``kornia.feature.LocalFeature`` over a trained ``R2D2Model`` (images BxCxHxW in [0, 1])."""
    return _r2d2_feature_cls()(model, num_features)


# ---------------------------------------------------------------- evaluation (kornia matching + RANSAC)
def transform(h, xy):
    from kornia.geometry import transform_points
    return transform_points(h[None].to(xy.dtype), xy[None])[0]


def mma(err: torch.Tensor, thresholds=MMA_THRESHOLDS) -> list[float]:
    """Fraction of matches with reprojection error <= t, per t; 0 for an empty match set."""
    if err.numel() == 0:
        return [0.0] * len(thresholds)
    return [float((err <= t).float().mean()) for t in thresholds]


def corner_error(h_est, h_true, w, h) -> float:
    """Mean distance of image 1's four corners mapped by the estimated and the true homography."""
    c = torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]], dtype=torch.float64)
    return float((transform(h_est.double(), c) - transform(h_true.double(), c)).norm(dim=1).mean())


def evaluate_pair(kp1, d1, kp2, d2, h_true, size1, seed=0) -> dict:
    """MMA per threshold, match count and corner error for mnn and snn matching of one pair."""
    from kornia.feature import match_mnn, match_snn
    from kornia.geometry.ransac import RANSAC

    out = {}
    for name, match in (("mnn", match_mnn), ("snn", lambda a, b: match_snn(a, b, RATIO))):
        if len(d1) and len(d2):
            _, idx = match(d1, d2)
        else:
            idx = torch.zeros(0, 2, dtype=torch.long)
        m1, m2 = kp1[idx[:, 0]].double(), kp2[idx[:, 1]].double()
        err = (transform(h_true.double(), m1) - m2).norm(dim=1)
        cerr = math.inf
        if len(m1) >= 4:
            try:
                h_est, _ = RANSAC("homography", inl_th=RANSAC_TH, seed=seed, **RANSAC_BUDGET)(m1.float(), m2.float())
                if h_est.abs().sum() > 0 and torch.isfinite(h_est).all():
                    cerr = corner_error(h_est, h_true, *size1)
            except (RuntimeError, ValueError, torch.linalg.LinAlgError):  # degenerate sample: a miss
                pass
        out[name] = {"mma": mma(err), "matches": len(m1), "corner_error": cerr}
    return out


def evaluate_sequence(extract, images: dict, homs: dict, name: str) -> dict:
    """``extract(img 1x3xHxW float [0,1]) -> (keypoints Nx2, descriptors NxD)``; the sequence's
    pair results (``evaluate_pair`` + keypoint counts) and the extraction time of each image."""
    feats, times = {}, []
    for k, im in images.items():
        t0 = time.perf_counter()
        feats[k] = extract(im[None].float() / 255)
        times.append(time.perf_counter() - t0)
    size1 = (images[1].shape[2], images[1].shape[1])
    pairs = []
    for k, h in sorted(homs.items()):
        r = evaluate_pair(*feats[1], *feats[k], h, size1)
        r.update(seq=name, pair=k, keypoints=[len(feats[1][0]), len(feats[k][0])])
        pairs.append(r)
    return {"seq": name, "pairs": pairs, "image_ms": [t * 1e3 for t in times]}


def summarise(pairs: list[dict], prefix="") -> dict:
    """The metrics over a list of pair results (``evaluate_pair`` + keypoints)."""
    if not pairs:
        return {}
    res = {}
    for name, tag in (("mnn", ""), ("snn", "snn_")):
        mmas = np.array([p[name]["mma"] for p in pairs])
        for t, v in zip(MMA_THRESHOLDS, mmas.mean(0)):
            res[f"{prefix}{tag}mma@{t}"] = float(v)
        cerr = np.array([p[name]["corner_error"] for p in pairs])
        for e in HOM_THRESHOLDS:
            res[f"{prefix}{tag}hom@{e}"] = float((cerr <= e).mean())
        res[f"{prefix}{tag}matches"] = float(np.mean([p[name]["matches"] for p in pairs]))
    res[f"{prefix}keypoints"] = float(np.mean([n for p in pairs for n in p["keypoints"]]))
    res[f"{prefix}pairs"] = len(pairs)
    return res


# ---------------------------------------------------------------- training views and losses
def random_homographies(n, size, device, max_angle=15.0, scale=(0.8, 1.2), jitter=0.1):
    """n random homographies of a size x size image: rotation and scale about the centre, then
    each corner moved by up to ``jitter`` x size (kornia.geometry.get_perspective_transform)."""
    from kornia.geometry import get_perspective_transform
    s = size - 1.0
    src = torch.tensor([[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]], device=device).expand(n, 4, 2)
    ang = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_angle)
    sc = scale[0] + torch.rand(n, device=device) * (scale[1] - scale[0])
    rot = torch.stack([torch.cos(ang), -torch.sin(ang), torch.sin(ang), torch.cos(ang)], -1).view(n, 2, 2)
    c = s / 2
    dst = (src - c) @ (rot * sc.view(n, 1, 1)).transpose(1, 2) + c
    dst = dst + (torch.rand(n, 4, 2, device=device) * 2 - 1) * jitter * size
    return get_perspective_transform(src, dst)


def descriptor_losses(d1, d2, rel1, rel2, h, stride=8, margin=4, tau=0.05, kappa=0.5, ring=4.0):
    """InfoNCE on grid correspondences (see the module doc) and the AP-style reliability loss."""
    _, _, hh, ww = d1.shape
    ldesc, lrel, n = d1.new_zeros(()), d1.new_zeros(()), 0
    angles = torch.arange(8, device=d1.device) * (math.pi / 4)
    offsets = torch.stack([angles.cos(), angles.sin()], -1) * ring
    for b in range(len(d1)):
        ox, oy = (int(v) for v in torch.randint(stride, (2,)))
        ys, xs = torch.meshgrid(torch.arange(margin + oy, hh - margin, stride, device=d1.device),
                                torch.arange(margin + ox, ww - margin, stride, device=d1.device), indexing="ij")
        p = torch.stack([xs.flatten(), ys.flatten()], -1).float()
        q = transform(h[b], p)
        ok = (q[:, 0] >= margin) & (q[:, 0] <= ww - 1 - margin) & (q[:, 1] >= margin) & (q[:, 1] <= hh - 1 - margin)
        p, q = p[ok], q[ok]
        if len(p) < 2:
            continue
        a = d1[b, :, p[:, 1].long(), p[:, 0].long()].t()
        pos = sample_desc(d2[b:b + 1], q)
        hard = sample_desc(d2[b:b + 1], (q[:, None] + offsets).reshape(-1, 2)).view(len(q), 8, -1)
        logits = torch.cat([a @ pos.t(), (hard @ a[:, :, None])[..., 0]], 1) / tau
        target = torch.arange(len(p), device=d1.device)
        back = (pos @ a.t()) / tau
        ldesc = ldesc + 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(back, target))
        prob = torch.cat([logits.softmax(1)[target, target], back.softmax(1)[target, target]]).detach()
        r = torch.cat([rel1[b, 0, p[:, 1].long(), p[:, 0].long()],
                       F.grid_sample(rel2[b:b + 1], torch.stack([(q[:, 0] + 0.5) / ww * 2 - 1,
                                                                 (q[:, 1] + 0.5) / hh * 2 - 1], -1).view(1, 1, -1, 2),
                                     align_corners=False).view(-1)])
        lrel = lrel + (1 - (prob * r + kappa * (1 - r))).mean()
        n += 1
    n = max(n, 1)
    return ldesc / n, lrel / n


def repeatability_losses(rep1, rep2, h, patch=8):
    """R2D2's cosim (view 2's map warped back, valid pixels only) and peaky losses."""
    from kornia.geometry import warp_perspective
    size = rep1.shape[-2:]
    hinv = torch.linalg.inv(h)
    back = warp_perspective(rep2, hinv, size, align_corners=True)
    valid = warp_perspective(torch.ones_like(rep2), hinv, size, align_corners=True) > 0.999
    v = valid.float()
    p1 = F.unfold(rep1 * v, patch, stride=patch // 2)
    p2 = F.unfold(back * v, patch, stride=patch // 2)
    full = F.unfold(v, patch, stride=patch // 2).mean(1) > 0.5
    cos = (F.normalize(p1, dim=1) * F.normalize(p2, dim=1)).sum(1)
    cosim = 1 - cos[full].mean() if full.any() else rep1.sum() * 0
    k = patch + 1
    peaky = sum(1 - (F.max_pool2d(r, k, 1, k // 2) - F.avg_pool2d(r, k, 1, k // 2)).mean() for r in (rep1, rep2)) / 2
    return cosim, peaky


# ---------------------------------------------------------------- mmengine registration
def _register():
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.registry import DATASETS, FUNCTIONS, METRICS, MODELS

    import backbones.openmmlab  # noqa: F401  (registers QuantScalesAfterInit; checkpoint loading)

    if "R2D2Model" in MODELS.module_dict:
        return

    class _MatchingModel(BaseModel):
        """predict: one HPatches sequence per item (see ``evaluate_sequence``)."""

        def extract(self, img):
            raise NotImplementedError

        @torch.no_grad()
        def predict(self, inputs, data_samples):
            # one result per sequence (mmengine's metric keeps as many results as dataset items)
            return [evaluate_sequence(self.extract, images, {k: h.cpu() for k, h in meta["H"].items()}, meta["name"])
                    for images, meta in zip(inputs, data_samples)]

    @MODELS.register_module()
    class R2D2Model(_MatchingModel):
        def __init__(self, width=1.0, body="fp32", head="fp32", num_features=1000, data_preprocessor=None):
            super().__init__(data_preprocessor=data_preprocessor)
            from backbones.layers import reset_quantizer_scales
            c = max(1, round(BASE_CHANNELS * width))
            self.backbone = Backbone(c, body)
            self.head = Head(self.backbone.out_channels, self.backbone.out_channels, head)
            self.num_features = num_features
            reset_quantizer_scales(self)

        def extract(self, img):
            lafs, _, desc = r2d2_feature(self, self.num_features)(img.to(self.head.desc.weight.device))
            from kornia.feature import get_laf_center, laf_is_filled
            keep = laf_is_filled(lafs)[0]
            return get_laf_center(lafs)[0][keep].cpu(), desc[0][keep].cpu()

        def _views(self, img):
            from kornia.augmentation import ColorJitter
            from kornia.geometry import warp_perspective
            n, _, s, _ = img.shape
            h = random_homographies(n, s, img.device)
            img2 = warp_perspective(img, h, (s, s), align_corners=True)
            jitter = ColorJitter(0.3, 0.3, 0.2, 0.03, p=1.0)
            return jitter(img), jitter(img2), h

        def forward(self, inputs, data_samples=None, mode="tensor"):
            if mode == "predict":
                return self.predict(inputs, data_samples)
            img = inputs.float() / 255 if inputs.dtype == torch.uint8 else inputs
            if mode == "tensor":
                return dense_maps(self, img)
            v1, v2, h = self._views(img)
            d, rep, rel = dense_maps(self, torch.cat([v1, v2]))
            n = len(img)
            ldesc, lrel = descriptor_losses(d[:n], d[n:], rel[:n], rel[n:], h)
            cosim, peaky = repeatability_losses(rep[:n], rep[n:], h)
            return {"loss_desc": ldesc, "loss_rel": lrel, "loss_cosim": cosim, "loss_peaky": peaky}

    @MODELS.register_module()
    class SIFTModel(_MatchingModel):
        """kornia's SIFT (grey, RootSIFT descriptors) through the same matchers and RANSAC."""

        def __init__(self, num_features=1000, data_preprocessor=None):
            super().__init__(data_preprocessor=data_preprocessor)
            from kornia.feature import SIFTFeature
            self.sift = SIFTFeature(num_features=num_features, upright=False, rootsift=True)
            self.sift.requires_grad_(False)  # fixed kernels, nothing to train

        def extract(self, img):
            from kornia.color import rgb_to_grayscale
            from kornia.feature import get_laf_center, laf_is_filled
            lafs, _, desc = self.sift(rgb_to_grayscale(img))
            keep = laf_is_filled(lafs)[0]
            return get_laf_center(lafs)[0][keep], desc[0][keep]

        def forward(self, inputs, data_samples=None, mode="tensor"):
            if mode == "predict":
                return self.predict(inputs, data_samples)
            from kornia.color import rgb_to_grayscale
            img = inputs.float() / 255 if inputs.dtype == torch.uint8 else inputs
            # kornia's SIFT takes one image at a time
            return [self.sift(rgb_to_grayscale(x[None])) for x in img]

    @METRICS.register_module()
    class HPatchesMetric(BaseMetric):
        default_prefix = "hpatches"

        def process(self, data_batch, data_samples):
            self.results.extend(data_samples)

        def compute_metrics(self, results):
            pairs = [p for r in results for p in r["pairs"]]
            res = summarise(pairs)
            for group in ("v", "i"):
                res.update(summarise([p for p in pairs if p["seq"].startswith(group + "_")], group + "_"))
            ms = [t for r in results for t in r["image_ms"]]
            res["ms_per_image"] = float(np.mean(ms)) if ms else float("nan")
            return res

    DATASETS.register_module(name="HPatchesSequences", module=HPatchesSequences)
    FUNCTIONS.register_module(name="sequence_collate", module=sequence_collate)
    DATASETS.register_module(name="MatchingRandomCrops", module=RandomCrops)


# ---------------------------------------------------------------- the task
#: default training images: the real photos in ../shared/data when present (COCO-mini and T91),
#: else the embedded COCO sample (a fresh clone offline); the record lists the folders and a hash
SHARED_TRAIN = [REPO.parent / "shared" / "data" / "coco-mini" / "images", REPO.parent / "shared" / "data" / "sr" / "T91"]
SAMPLE_TRAIN = [REPO / "data" / "coco-sample" / "images"]


def _train_dirs(train_images) -> list[Path]:
    if not train_images:
        return SHARED_TRAIN if all(d.is_dir() for d in SHARED_TRAIN) else SAMPLE_TRAIN
    return [Path(p).expanduser() for p in str(train_images).split(",") if p]


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
    DEFAULT_WIDTH = {"binealnet": 2.0}
    BASELINES = ("sift",)
    OPTIONS = {
        "width": option(float, help="network width multiplier (default: 2.0 for binealnet, 1.0 for int8/fp32)"),
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
        bb = common.backbone_kwargs(self, backbone, variant, width)
        body = uniform_kind(bb["precision"])
        if body is None:
            raise DataError(f"variant precision {bb['precision']!r} is not supported by the matching network "
                            "(binary, int8 or fp32)")
        head = "fp32" if body == "fp32" else "int8"
        dirs = _train_dirs(train_images)
        files = train_image_files(dirs)
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}:{f.stat().st_size}\n".encode())
        optim = dict(type="Adam", lr=s["lr"], weight_decay=0.0)
        cfg.update(
            model=common.quantized_model(dict(type="R2D2Model", width=bb["width"], body=body, head=head,
                                              num_features=k)),
            train_dataloader=dict(batch_size=s["batch_size"], num_workers=0, persistent_workers=False,
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
