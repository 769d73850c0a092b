"""Super-resolution: a slim EDSR whose body is binary (BiNealNet), INT8 or FP32; PSNR/SSIM on Y.

Network (EDSR layout, slimmed): ``backbone`` = head conv (``stem``, 3 -> C) + ``body`` (B residual
blocks and EDSR's body-end conv) + EDSR's global skip; ``head`` = the upsampler: one 3x3 conv
C -> 3*s^2 and PixelShuffle(s) (ESPCN-style one-step, at LR resolution: EDSR's two x2 stages at
full width would cost more OPs than the whole binary body), plus ABPN's anchor (Du et al. 2021):
the LR image repeated s^2 times is added before the shuffle, i.e. the net predicts the residual
over nearest-neighbour upsampling, without MACs; it makes the short CPU schedules converge. The
network's input is the LR image in [0, 1] minus EDSR's DIV2K RGB mean. Slim base: C = 32 channels
x width, B = 8 blocks.

Precision: ``binealnet`` = binary body (BiNealNet's weight and activation quantizers, the seed's
activation binarizer with its PReLU, clipped slope) at width 2.0 (C = 64) with 8-bit first and last
convs; each binary conv has its own residual and BatchNorm (Bi-Real double shortcut, as
BiNealNet's blocks): ``x + BN(conv(x))``, twice per block. ``int8`` = the same slim EDSR at 1.0x
(C = 32), every conv INT8 (EDSR block ``x + conv(ReLU(conv(x)))``, no BN). ``fp32`` = the same in
float (an EDSR-baseline at 32 channels and 8 blocks). ``bicubic`` = no network (reference row).

Data (``--data ROOT``): folders of HR images (PNG/BMP/JPEG/TIFF). Training folder: the first of
``ROOT/train``, ``ROOT/T91``, ``ROOT/DIV2K_train_HR``, ``ROOT/DIV2K``; test folder:
``ROOT/<--test-set>`` if given, else the first of ``ROOT/test``, ``ROOT/val``, ``ROOT/Set5``,
``ROOT/Set14``, ``ROOT/B100``, ``ROOT/BSD100``, ``ROOT/Urban100``, ``ROOT/DIV2K_valid_HR``. So
``../shared/data/sr`` (T91/ + Set5/) works as it is, and ``--test-set Set14`` picks another
folder. A ROOT that holds images itself (e.g. ``--data .../Set14`` for ``bench eval``) is the
test folder AND the training folder (for evaluation and smoke runs; the record says so).

Images: grayscale is replicated to RGB, RGBA / LA lose their alpha (no compositing), palettes are
expanded (PIL ``convert('RGB')``). HR is cropped at the bottom/right to a multiple of the scale
(BasicSR's mod-crop). 16-bit PNGs, images that cannot be decoded, test images too small for
the metric and training images smaller than the schedule's HR patch are one ``DataError`` naming
the file.

LR = bicubic downscaling of the mod-cropped HR, rounded to 8 bits, as MATLAB ``imresize`` (the
published protocol): torch's antialiased bicubic (``F.interpolate(mode='bicubic',
antialias=True)``, Keys a = -0.5, kernel widened by the scale, the same kernel as MATLAB) on the
image padded symmetrically (MATLAB's border rule, where torch alone would renormalise truncated
weights). Measured once against BasicSR's port of MATLAB ``imresize`` on Set5 baby and butterfly,
x2/x3/x4, in float on [0, 1]: max |diff| 6e-7 downscaling, 1.1e-5 upscaling; after rounding to
8 bits, 16 of 238,140 LR values (x2) differ by one level (float ties), none at x3/x4. Plain
``F.interpolate`` (no padding) differs by up to 0.06 at the borders; torch's default bicubic
(a = -0.75) by up to 0.07 when upscaling. The tests check ours against MATLAB's weight formula
written out. The ``bicubic`` row upsamples LR the same way: on Set5 x4 it gives 28.43 dB / 0.8113
(published MATLAB bicubic: 28.42 / 0.8104).

Metric (BasicSR protocol): SR rounded to 8 bits, Y of ITU-R BT.601 YCbCr (MATLAB ``rgb2ycbcr``:
Y = 16 + (65.481 R + 128.553 G + 24.966 B), RGB in [0, 1], Y in [16, 235]), ``scale`` pixels
cropped at every border, PSNR (``kornia.metrics.psnr``, max 255, capped at 100 dB for identical
images) and SSIM (``kornia.metrics.ssim``, 11x11 Gaussian window, sigma 1.5, valid region), both
averaged over the test images.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import backbones

from . import common
from .base import DataError, Task, option, register

IMAGE_EXTS = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm"}
TRAIN_DIRS = ("train", "T91", "DIV2K_train_HR", "DIV2K")
TEST_DIRS = ("test", "val", "Set5", "Set14", "B100", "BSD100", "Urban100", "DIV2K_valid_HR")
SCALES = (2, 3, 4)
PSNR_CAP = 100.0  # dB for identical images (mse 0), so a mean over images stays finite
SSIM_WINDOW = 11
RGB_MEAN = (0.4488, 0.4371, 0.4040)  # EDSR's MeanShift (DIV2K), on [0, 1]
BASE_CHANNELS, BASE_BLOCKS = 32, 8
#: RGB mode conversions PIL does for us (stated in the module docstring)
MODES_8BIT = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}

# hr_patch: training crop in HR pixels (a multiple of 2, 3 and 4; LR patch = hr_patch / scale).
# patches_per_epoch: random crops drawn per epoch (images in turn, random place and flip/rotation).
# cost_lr: the LR size whose forward is counted and timed (180x320: a 1280x720 output at x4).
# input_size (the interface's name): the HR training patch side.
SCHEDULES = {
    "smoke": dict(epochs=1, batch_size=4, lr=5e-4, hr_patch=48, input_size=48, patches_per_epoch=8,
                  max_test_images=2, cost_lr=(24, 32), val_interval=None,
                  label="smoke (seconds; CI check, not an accuracy)"),
    "short": dict(epochs=4, batch_size=16, lr=1e-3, hr_patch=48, input_size=48, patches_per_epoch=800,
                  max_test_images=None, cost_lr=(180, 320), val_interval=None,
                  label="short (HR patches 48, batch 16, 200 iterations, Adam 1e-3 cosine; fits 2 CPU cores)"),
    "gpu": dict(epochs=20, batch_size=16, lr=1e-3, hr_patch=192, input_size=192, patches_per_epoch=4000,
                max_test_images=None, cost_lr=(180, 320), val_interval=5, num_workers=8,
                label="gpu (EDSR's HR patch 192, batch 16, 20 x 250 = 5,000 iterations, Adam 1e-3 cosine; "
                      "EDSR trains 300k)"),
}
BASELINES = ("bicubic",)


# ---------------------------------------------------------------- bicubic as MATLAB imresize
def _pad_symmetric(x: torch.Tensor, p: int) -> torch.Tensor:
    """Mirror ``p`` pixels at every side, the edge pixel repeated (numpy 'symmetric', MATLAB's rule)."""
    x = torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], -2)
    return torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], -1)


def imresize(x: torch.Tensor, scale: int, down: bool) -> torch.Tensor:
    """MATLAB-style bicubic resize of (N, C, H, W) float by an integer ``scale`` (down: H/s, up: H*s);
    no rounding. A margin of whole LR pixels is mirrored first so that no output pixel near the
    border sees a truncated kernel, then cropped away again."""
    h, w = x.shape[-2:]
    if down:
        if h % scale or w % scale:
            raise ValueError(f"{h}x{w} is not a multiple of scale {scale}")
        p, out, crop = 2 * scale, (h // scale + 4, w // scale + 4), 2
    else:
        p, out, crop = 2, ((h + 4) * scale, (w + 4) * scale), 2 * scale
    y = F.interpolate(_pad_symmetric(x, p), size=out, mode="bicubic", antialias=True, align_corners=False)
    return y[..., crop:-crop, crop:-crop]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> 8-bit levels (as a PNG would store it)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


# ---------------------------------------------------------------- metric (BasicSR protocol)
def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) BT.601 Y in [16, 235] (MATLAB rgb2ycbcr)."""
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True) + 16.0


def _y_cropped(sr, hr, border):
    sr = to_uint8(sr).double() / 255  # the SR image as it would be saved
    hr = hr.double()
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    if border:
        ys, yh = ys[..., border:-border, border:-border], yh[..., border:-border, border:-border]
    return ys, yh


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """PSNR (dB) on Y of one image pair (1, 3, H, W) in [0, 1], ``border`` pixels cropped; capped."""
    import kornia
    ys, yh = _y_cropped(sr, hr, border)
    if torch.equal(ys, yh):
        return PSNR_CAP
    return min(PSNR_CAP, float(kornia.metrics.psnr(ys, yh, 255.0)))


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """SSIM on Y of one image pair, ``border`` pixels cropped; mean over the valid 11x11 windows."""
    import kornia
    ys, yh = _y_cropped(sr, hr, border)
    return float(kornia.metrics.ssim(ys, yh, SSIM_WINDOW, max_val=255.0, padding="valid").mean())


# ---------------------------------------------------------------- data
def _images(folder: Path) -> list[Path]:
    # an entry named like an image is one, or an error (never silently skipped)
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTS)


def _layout(root, test_set=None) -> dict:
    """{'train': folder or None, 'test': folder, 'single': bool}; DataError if no test folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (expected HR image folders, e.g. T91/ and Set5/, "
                        "or train/ and test/)")
    if test_set:
        test = root / test_set
        if not test.is_dir():
            raise DataError(f"{test}: --test-set folder not found")
    else:
        test = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
    train = next((root / d for d in TRAIN_DIRS if (root / d).is_dir()), None)
    if test is None and train is None and _images(root):
        return {"train": root, "test": root, "single": True}
    if test is None:
        raise DataError(f"{root}: no test folder (expected one of {', '.join(d + '/' for d in TEST_DIRS)}, "
                        "or image files directly in it)")
    return {"train": train, "test": test, "single": False}


def _png_bit_depth(path: Path):
    with open(path, "rb") as f:
        head = f.read(25)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def _check_image(path: Path, min_side: int) -> tuple[int, int]:
    """(width, height) from the header; DataError for 16-bit, undecodable or too small images."""
    size, mode = common.check_image(path)
    try:
        depth = _png_bit_depth(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.__class__.__name__}: {e})") from None
    if depth == 16 or mode not in MODES_8BIT:
        raise DataError(f"{path}: {'16-bit PNG' if depth == 16 else 'image mode ' + mode}; expected 8 bits per "
                        "channel (the PSNR/SSIM protocol is 8-bit): convert it to 8-bit RGB first")
    if min(size) < min_side:
        raise DataError(f"{path}: {size[0]}x{size[1]} px is smaller than {min_side} px on a side")
    return size


def _check_folder(folder: Path, min_side: int) -> list[Path]:
    files = _images(folder)
    if not files:
        raise DataError(f"{folder}: no images (expected files ending in {sorted(IMAGE_EXTS)})")
    for f in files:
        _check_image(f, min_side)
    return files


def test_min_side(scale: int) -> int:
    """Smallest HR side the metric can use: an 11-px SSIM window after cropping ``scale`` at both borders."""
    return SSIM_WINDOW + 3 * scale


def load_rgb(path: Path, scale: int) -> torch.Tensor:
    """(3, H, W) uint8 RGB of an HR image, mod-cropped to a multiple of ``scale``."""
    from PIL import Image
    _check_image(path, scale)
    with Image.open(path) as im:
        x = np.asarray(im.convert("RGB"), dtype=np.uint8)
    h, w = x.shape[0] // scale * scale, x.shape[1] // scale * scale
    return torch.from_numpy(np.ascontiguousarray(x[:h, :w].transpose(2, 0, 1)))


def make_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 (3, H, W) HR -> uint8 (3, H/s, W/s) LR (MATLAB-style bicubic, rounded to 8 bits)."""
    return to_uint8(imresize(hr[None].float() / 255, scale, down=True))[0]


class SRDataset(torch.utils.data.Dataset):
    """HR images of one folder with their LR made once at load time (the whole image, then cropped,
    as the published protocol). Test items are whole images; training items are random aligned
    LR/HR patches with a random flip / 90-degree rotation, ``patches_per_epoch`` per epoch."""

    def __init__(self, folder, scale, train=False, hr_patch=None, patches_per_epoch=None, max_images=None):
        if folder is None:
            raise DataError("no training folder: expected one of "
                            f"{', '.join(d + '/' for d in TRAIN_DIRS)} under --data (or image files directly in it)")
        folder = Path(folder)
        min_side = hr_patch if train else test_min_side(scale)
        self.files = _check_folder(folder, min_side)[:max_images]
        self.scale, self.train, self.hr_patch, self.n = scale, train, hr_patch, patches_per_epoch
        self.hr = [load_rgb(f, scale) for f in self.files]
        self.lr = [make_lr(h, scale) for h in self.hr]
        self.metainfo = {"folder": str(folder), "images": len(self.files)}

    def __len__(self):
        return self.n if self.train else len(self.files)

    def __getitem__(self, i):
        k = i % len(self.files)
        lr, hr = self.lr[k], self.hr[k]
        if self.train:
            p, s = self.hr_patch // self.scale, self.scale
            top = int(torch.randint(0, lr.shape[1] - p + 1, ()))
            left = int(torch.randint(0, lr.shape[2] - p + 1, ()))
            lr = lr[:, top:top + p, left:left + p]
            hr = hr[:, top * s:(top + p) * s, left * s:(left + p) * s]
            hflip, vflip, rot = torch.rand(3) < 0.5
            for flag, fn in ((hflip, lambda t: t.flip(-1)), (vflip, lambda t: t.flip(-2)),
                             (rot, lambda t: t.transpose(-2, -1))):
                if flag:
                    lr, hr = fn(lr), fn(hr)
            lr, hr = lr.contiguous(), hr.contiguous()
        return {"inputs": lr, "data_samples": hr}


# ---------------------------------------------------------------- network
def _conv(cin, cout, w, a, bias=True, unsigned=False, clip_slope=True, scales_after=False):
    conv = backbones.layers.qconv(cin, cout, 3, padding=1, bias=bias, w=w, a=a, a_unsigned=unsigned,
                                  scales_after=scales_after and w == a == "binary")
    if hasattr(conv.act_quantizer, "clip_slope"):
        conv.act_quantizer.clip_slope = clip_slope
    return conv


class BinaryResBlock(nn.Module):
    """Two binary convs, each with its own residual and BatchNorm (Bi-Real double shortcut): the
    real-valued stream bypasses every sign(); the binary activation's PReLU is the nonlinearity."""

    def __init__(self, c, w, a, **kw):
        super().__init__()
        self.conv1, self.bn1 = _conv(c, c, w, a, bias=False, **kw), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = _conv(c, c, w, a, bias=False, **kw), nn.BatchNorm2d(c)

    def forward(self, x):
        x = x + self.bn1(self.conv1(x))
        return x + self.bn2(self.conv2(x))


class EDSRBlock(nn.Module):
    """EDSR's residual block: x + conv(ReLU(conv(x))), no BN (the second conv's INT8 input is >= 0)."""

    def __init__(self, c, w, a, **kw):
        super().__init__()
        self.conv1 = _conv(c, c, w, a, **kw)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(c, c, w, a, unsigned=True, **kw)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x)))


class SRBackbone(nn.Module):
    """EDSR head conv (``stem``, at ``edge`` precision), residual body and global skip."""

    def __init__(self, channels, blocks, w, a, edge, **kw):
        super().__init__()
        self.stem = _conv(3, channels, edge, edge)
        block = BinaryResBlock if "binary" in (w, a) else EDSRBlock
        self.body = nn.Sequential(*[block(channels, w, a, **kw) for _ in range(blocks)])
        # EDSR's body-end conv; with a BN (and no bias) when binary, as every binary conv here
        end = _conv(channels, channels, w, a, bias=block is EDSRBlock, **kw)
        self.body_end = nn.Sequential(end, nn.BatchNorm2d(channels)) if block is BinaryResBlock else end

    def forward(self, x):
        x = self.stem(x)
        return x + self.body_end(self.body(x))


def _register():
    """mmengine registrations (lazy, so ``import tasks.super_resolution`` needs no OpenMMLab)."""
    import backbones.openmmlab  # noqa: F401  (QuantScalesAfterInit, checkpoint loading)
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseDataPreprocessor, BaseModel
    from mmengine.registry import DATASETS, METRICS, MODELS

    if "BenchSR" in MODELS.module_dict:
        return

    @MODELS.register_module()
    class SRDataPreprocessor(BaseDataPreprocessor):
        """uint8 LR / HR lists -> float [0, 1] batches on the model's device."""

        def forward(self, data, training=False):
            def batch(xs):
                x = torch.stack(xs) if isinstance(xs, (list, tuple)) else xs
                return x.to(self.device, non_blocking=True).float() / 255
            return {"inputs": batch(data["inputs"]), "data_samples": batch(data["data_samples"])}

    class _SRModel(BaseModel):
        def __init__(self, scale):
            super().__init__(data_preprocessor=dict(type="SRDataPreprocessor"))
            self.scale = scale

        def forward(self, inputs, data_samples=None, mode="tensor"):
            sr = self.upscale(inputs)
            if mode == "loss":
                return {"loss": F.l1_loss(sr.float(), data_samples)}
            if mode == "predict":
                return [(s.float().detach()[None], h[None]) for s, h in zip(sr, data_samples)]
            return sr

    @MODELS.register_module()
    class BenchSR(_SRModel):
        """Slim EDSR: ``backbone`` (stem + body + global skip) and ``head`` (conv + PixelShuffle)."""

        def __init__(self, scale, channels, blocks, w, a, edge, clip_slope=True, scales_after=False):
            super().__init__(scale)
            kw = dict(clip_slope=clip_slope, scales_after=scales_after)
            self.backbone = SRBackbone(channels, blocks, w, a, edge, **kw)
            self.head = nn.Sequential(_conv(channels, 3 * scale ** 2, edge, edge), nn.PixelShuffle(scale))
            self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        def upscale(self, x):
            # ABPN's anchor: the LR image repeated s^2 times is added before the PixelShuffle (nearest
            # upsampling, no MACs), so the network learns the residual over nearest neighbour
            conv, shuffle = self.head
            anchor = x.repeat_interleave(self.scale ** 2, dim=1)
            return shuffle(conv(self.backbone(x - self.mean)) + anchor)

    @MODELS.register_module()
    class BenchBicubic(_SRModel):
        """No network: MATLAB-style bicubic upscaling of the LR image (the reference row)."""

        def upscale(self, x):
            return imresize(x, self.scale, down=False)

    @METRICS.register_module()
    class SRMetric(BaseMetric):
        """PSNR and SSIM on Y, ``border`` pixels cropped, averaged over images."""
        default_prefix = ""

        def __init__(self, border, **kw):
            super().__init__(**kw)
            self.border = border

        def process(self, data_batch, data_samples):
            for sr, hr in data_samples:
                sr, hr = sr.cpu(), hr.cpu()
                self.results.append((psnr_y(sr, hr, self.border), ssim_y(sr, hr, self.border)))

        def compute_metrics(self, results):
            return {"psnr": float(np.mean([r[0] for r in results])), "ssim": float(np.mean([r[1] for r in results]))}

    DATASETS.register_module(name="BenchSRDataset", module=SRDataset)


# ---------------------------------------------------------------- task
@register
class SuperResolution(Task):
    NAME = "super_resolution"
    DESCRIPTION = "slim EDSR (8-bit first/last conv, binary | INT8 | FP32 body); PSNR/SSIM on Y, Set5"
    METRIC = {"name": "PSNR", "key": "psnr", "higher_is_better": True}
    SECONDARY_KEYS = ("ssim",)
    DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "sr-sample"
    SCHEDULES = SCHEDULES
    BASELINES = BASELINES
    OPTIONS = {
        "scale": option(int, 4, ["2", "3", "4"], "upscaling factor (LR = HR downscaled by it)"),
        "test_set": option(str, help="folder under --data to test on (default: test/, val/, Set5/, ... first found)"),
    }

    def validate_data(self, root, test_set=None):
        lay = _layout(root, test_set)
        _check_folder(lay["test"], test_min_side(max(SCALES)))
        if lay["train"] is not None and not lay["single"]:
            _check_folder(lay["train"], 1)

    def data_info(self, root, schedule=None, test_set=None, **_):
        """Folders, image counts and a sha256 over relative paths and bytes of the images used."""
        root = Path(root)
        lay = _layout(root, test_set)
        h, counts = hashlib.sha256(), {}
        n_test = SCHEDULES[schedule]["max_test_images"] if schedule else None
        for split in ("train", "test"):
            files = _images(lay[split]) if lay[split] is not None else []
            files = files[:n_test] if split == "test" else files
            counts[split] = len(files)
            for f in files:
                h.update(f.relative_to(root).as_posix().encode() if f != root else b"")
                h.update(f.read_bytes())
        rel = lambda d: "." if d == root else str(d.relative_to(root)) if d else None  # noqa: E731
        return {"name": root.name, "path": str(root), "images": counts["train"] + counts["test"],
                "train_images": counts["train"], "test_images": counts["test"], "sha256": h.hexdigest(),
                "train_folder": rel(lay["train"]), "test_folder": rel(lay["test"]),
                "layout": ("one folder used for train AND test (evaluation / smoke only)" if lay["single"]
                           else "train and test folders")}

    def build_config(self, backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu", variant=None,
                     scale=4, width=None, test_set=None, **_):
        from mmengine.config import Config

        if scale not in SCALES:
            raise DataError(f"--scale must be one of {SCALES}; got {scale}")
        _register()
        s = SCHEDULES[schedule]
        epochs = s["epochs"] if epochs is None else epochs
        lay = _layout(data_root, test_set)
        baseline = backbone in BASELINES
        test_loader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                           sampler=dict(type="DefaultSampler", shuffle=False), collate_fn=dict(type="pseudo_collate"),
                           dataset=dict(type="BenchSRDataset", folder=str(lay["test"]), scale=scale,
                                        max_images=s["max_test_images"]))
        evaluator = dict(type="SRMetric", border=scale)
        bench = dict(schedule=schedule, schedule_label=s["label"], scale=scale, hr_patch=s["hr_patch"],
                     lr_patch=s["hr_patch"] // scale, input_size=s["input_size"],
                     cost_input=[1, 3, *s["cost_lr"]], test_folder=str(lay["test"]),
                     bicubic="MATLAB-style: torch antialiased bicubic on a symmetric-padded image")
        cfg = dict(default_scope="mmengine", work_dir=str(work_dir),
                   custom_imports=dict(imports=["backbones.openmmlab"], allow_failed_imports=False),
                   test_dataloader=test_loader, test_cfg=dict(), test_evaluator=evaluator,
                   default_hooks=common.default_hooks(), **common.runtime(seed, device))
        if baseline:
            cfg.update(model=dict(type="BenchBicubic", scale=scale), train_dataloader=None, train_cfg=None,
                       optim_wrapper=None, param_scheduler=None, val_dataloader=None, val_cfg=None,
                       val_evaluator=None,
                       bench=dict(bench, model="bicubic (MATLAB-style, no network)"))
            return Config(cfg)
        bb = common.backbone_kwargs(self, backbone, variant, width, schedule)
        w_kind, a_kind = backbones.PRECISIONS[bb["precision"]]
        edge = backbones.presets.default_head_precision(self.NAME, bb["precision"])  # first and last conv
        channels = max(1, int(round(BASE_CHANNELS * bb["width"])))
        model = common.quantized_model(dict(
            type="BenchSR", scale=scale, channels=channels, blocks=BASE_BLOCKS, w=w_kind, a=a_kind, edge=edge,
            clip_slope=bb.get("clip_slope", True), scales_after=bb.get("scales_after", False)))
        train_loader = dict(batch_size=s["batch_size"], **common.loader_workers(device, s.get("num_workers", 0)),
                            sampler=dict(type="DefaultSampler", shuffle=True), collate_fn=dict(type="pseudo_collate"),
                            dataset=dict(type="BenchSRDataset", folder=str(lay["train"]) if lay["train"] else None,
                                         scale=scale, train=True, hr_patch=s["hr_patch"],
                                         patches_per_epoch=s["patches_per_epoch"]))
        val = s["val_interval"]
        cfg.update(
            model=model, train_dataloader=train_loader,
            train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=val or epochs + 1),
            val_dataloader=test_loader if val else None, val_cfg=dict() if val else None,
            val_evaluator=evaluator if val else None,
            # Adam for every backbone (EDSR's optimizer; the binary nets' usual one too)
            optim_wrapper=common.optim_wrapper(device, dict(type="Adam", lr=s["lr"], betas=(0.9, 0.999), weight_decay=0.0),
                                               bb.get("aux_lr_mult", 1.0)),
            param_scheduler=[dict(type="CosineAnnealingLR", T_max=epochs, eta_min=0, by_epoch=True,
                                  convert_to_iter_based=True)],
            bench=dict(bench, model=f"slim EDSR ({channels} ch x {BASE_BLOCKS} blocks)", head_precision=edge,
                       width=bb["width"], channels=channels, blocks=BASE_BLOCKS, backbone=bb))
        return Config(cfg)

    def add_teacher(self, cfg, teacher_model, checkpoint):
        # output-level distillation from the fp32 model (tasks/recipes.py: OutputDistilled); head.0 is the
        # last conv: the output before the pixel shuffle and the shared anchor, so the same L1
        cfg.model = dict(type="OutputDistilled", model=cfg.model, module="head.0", loss="l1",
                         teacher=dict(model=teacher_model, checkpoint=checkpoint))
        cfg.bench["distillation"] = "L1 between the student's and the fp32 teacher's outputs, weight 1, added to the L1 to the HR image"

    def example_inputs(self, schedule, device="cpu"):
        """One LR image at the schedule's cost size (short/gpu: 180x320, a 1280x720 output at x4)."""
        return (torch.zeros(1, 3, *SCHEDULES[schedule]["cost_lr"], device=device),)

    def format_metric(self, key, value):
        if value is None:
            return ""
        return f"{value:.4f}" if key.lower() == "ssim" else f"{value:.2f}"
