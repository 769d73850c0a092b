"""Super-resolution task: MATLAB-style bicubic, the PSNR/SSIM oracles, the network at every scale,
data checks, and one tiny training per backbone (plus the bicubic row) through mmengine's Runner."""
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tasks
from tasks import super_resolution as sr
from tasks.base import DataError

SR = tasks.get("super_resolution")
REPO = Path(__file__).resolve().parent.parent
SHARED_SR = REPO.parent / "shared" / "data" / "sr"
# real data for the checks below: ../shared/data/sr when present, else the embedded crops
DATA = SHARED_SR if (SHARED_SR / "Set5").is_dir() else sr.SuperResolution.DEFAULT_DATA
SET5_IMAGE = sorted((DATA / "Set5").iterdir())[0]


def _hr(path=SET5_IMAGE, scale=12):
    return sr.load_rgb(path, scale).double()[None] / 255


# ---------------------------------------------------------------- bicubic as MATLAB imresize
def _matlab_weights(n_in, scale):
    """MATLAB imresize's bicubic weight matrix (n_out x n_in) for an integer factor (``scale`` < 1:
    down, antialiased), written from MATLAB's contributions(): Keys a = -0.5, kernel widened by
    1/scale when shrinking, symmetric index mirroring at the borders, rows normalised."""
    def cubic(x):
        x = np.abs(x)
        return np.where(x <= 1, 1.5 * x ** 3 - 2.5 * x ** 2 + 1,
                        np.where(x <= 2, -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2, 0.0))
    n_out = round(n_in * scale)
    width = 4 / scale if scale < 1 else 4
    out = np.zeros((n_out, n_in))
    for i in range(n_out):
        u = (i + 1) / scale + 0.5 * (1 - 1 / scale)
        js = np.arange(math.floor(u - width / 2), math.floor(u - width / 2) + math.ceil(width) + 2)
        w = scale * cubic((u - js) * scale) if scale < 1 else cubic(u - js)
        w = w / w.sum()
        for j, wj in zip(js, w):
            k = j - 1  # 0-based, mirrored into [0, n_in): -1 -> 0, n_in -> n_in - 1 (symmetric)
            k = -k - 1 if k < 0 else (2 * n_in - k - 1 if k >= n_in else k)
            out[i, k] += wj
    return out


@pytest.mark.parametrize("scale", sr.SCALES)
def test_imresize_matches_matlab_formula(scale):
    hr = _hr(scale=scale)[..., :48, :60]
    for down, x in ((True, hr), (False, hr[..., :12, :15])):
        f = 1 / scale if down else scale
        wh, ww = _matlab_weights(x.shape[-2], f), _matlab_weights(x.shape[-1], f)
        ref = np.einsum("oh,chw,pw->cop", wh, x[0].numpy(), ww)
        ours = sr.imresize(x, scale, down=down)[0].numpy()
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() < 1e-6, (down, np.abs(ours - ref).max())
    # torch's antialiased bicubic alone equals it inside only: borders renormalise, MATLAB mirrors
    plain = torch.nn.functional.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True)
    ours = sr.imresize(hr, scale, down=True)
    assert torch.allclose(plain[..., 3:-3, 3:-3], ours[..., 3:-3, 3:-3], atol=1e-6)
    assert (plain - ours).abs().max() > 1e-3


def test_make_lr_is_rounded_8_bit_bicubic():
    hr = sr.load_rgb(SET5_IMAGE, 4)
    lr = sr.make_lr(hr, 4)
    assert lr.dtype == torch.uint8 and lr.shape == (3, hr.shape[1] // 4, hr.shape[2] // 4)
    ref = (sr.imresize(hr[None].double() / 255, 4, down=True)[0] * 255).round().clamp(0, 255)
    assert (lr.double() - ref).abs().max() <= 1  # float32 vs float64 at rounding ties only


# ---------------------------------------------------------------- metric oracles
def _y(x):
    """BT.601 Y on [0, 255] from RGB on [0, 1], straight from the standard's coefficients."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return 16 + 65.481 * r + 128.553 * g + 24.966 * b


def test_psnr_identical_images_is_capped():
    hr = _hr()
    assert sr.psnr_y(hr, hr, 4) == sr.PSNR_CAP
    assert sr.ssim_y(hr, hr, 4) == pytest.approx(1.0, abs=1e-9)


def test_psnr_of_a_constant_offset_is_closed_form():
    # grey image, +k on every channel: Y moves by k * 219/255 everywhere, so PSNR = 20 log10(255 / that)
    hr = torch.full((1, 3, 40, 40), 100 / 255, dtype=torch.float64)
    for k in (1, 3, 10):
        out = hr + k / 255
        assert sr.psnr_y(out, hr, 2) == pytest.approx(20 * math.log10(255 / (k * 219 / 255)), abs=1e-9)


def test_psnr_with_gaussian_noise_matches_mse_formula():
    g = torch.Generator().manual_seed(0)
    hr = _hr()
    noisy = (hr + torch.randn(hr.shape, generator=g, dtype=torch.float64) * 5 / 255).clamp(0, 1)
    q = (noisy * 255).round() / 255  # the metric scores the 8-bit image
    b = 3
    mse = ((_y(q) - _y(hr))[..., b:-b, b:-b] ** 2).mean().item()
    expected = 10 * math.log10(255 ** 2 / mse)
    assert sr.psnr_y(noisy, hr, b) == pytest.approx(expected, abs=1e-9)
    # sigma 5 on each channel: Y noise sigma about 5 * |(65.481, 128.553, 24.966)| / 255
    sigma_y = 5 * math.sqrt(65.481 ** 2 + 128.553 ** 2 + 24.966 ** 2) / 255
    assert expected == pytest.approx(20 * math.log10(255 / sigma_y), abs=0.2)


def _ssim_reference(x, y):
    """SSIM (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5), valid region, L = 255;
    scipy's correlate, not kornia."""
    from scipy.signal import correlate2d
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda a: correlate2d(a, w, mode="valid")  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = f(x), f(y)
    sx, sy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sx + sy + c2))).mean()


def test_ssim_matches_reference_and_constant_pair():
    # constant images a and b: SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly (contrast terms are C2/C2)
    img = lambda g: torch.full((1, 3, 32, 32), g / 255, dtype=torch.float64)  # noqa: E731 (grey level g)
    a, b = (16 + g * 219 / 255 for g in (100, 140))  # their Y
    c1 = (0.01 * 255) ** 2
    assert sr.ssim_y(img(100), img(140), 0) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)
    # a real image against its bicubic round trip, border 4: equal to the scipy reference
    hr = _hr()[..., :64, :96]
    up = sr.imresize(sr.imresize(hr, 4, down=True), 4, down=False)
    ref = _ssim_reference(_y((up.clamp(0, 1) * 255).round() / 255)[0, 4:-4, 4:-4].numpy(),
                          _y(hr)[0, 4:-4, 4:-4].numpy())
    assert sr.ssim_y(up, hr, 4) == pytest.approx(ref, abs=1e-6)
    assert 0.3 < ref < 0.99


# ---------------------------------------------------------------- network
@pytest.mark.parametrize("scale", sr.SCALES)
@pytest.mark.parametrize("backbone", ["binealnet", "int8", "fp32", "bicubic"])
def test_network_output_shape_and_parts(tmp_path, backbone, scale):
    from mmengine.registry import MODELS
    cfg = SR.build_config(backbone, sr.SuperResolution.DEFAULT_DATA, "smoke", tmp_path, 0, scale=scale,
                          width=None if backbone == "bicubic" else 0.25)
    model = MODELS.build(cfg.model).eval()
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        y = SR.forward_for_cost(model, x)
    assert y.shape == (1, 3, 10 * scale, 14 * scale)
    if backbone == "bicubic":
        assert not list(model.parameters())
        return
    from bench.cost import count_cost
    cost = count_cost(model, (x,), forward=lambda m, xs: SR.forward_for_cost(m, *xs))
    bits = {(l.name, l.bits) for l in cost.layers}
    edge = "32/32" if backbone == "fp32" else "8/8"
    body = {"binealnet": "1/1", "int8": "8/8", "fp32": "32/32"}[backbone]
    assert ("backbone.stem", edge) in bits and ("head.0", edge) in bits  # first and last conv
    assert ("backbone.body.0.conv1", body) in bits and ("backbone.body_end.0" if backbone == "binealnet"
                                                        else "backbone.body_end", body) in bits
    assert set(cost.parts) == {"backbone", "head"}
    assert cfg.bench.channels == 8  # 32 x the given width 0.25, for every backbone


def test_zero_last_conv_gives_nearest_upsampling(tmp_path):
    """The anchor: with the last conv at zero, the network returns the LR image upsampled by nearest."""
    from mmengine.registry import MODELS
    cfg = SR.build_config("fp32", sr.SuperResolution.DEFAULT_DATA, "smoke", tmp_path, 0, scale=3, width=0.25)
    model = MODELS.build(cfg.model).eval()
    torch.nn.init.zeros_(model.head[0].weight)
    torch.nn.init.zeros_(model.head[0].bias)
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        assert torch.equal(model(x), torch.nn.functional.interpolate(x, scale_factor=3, mode="nearest"))


def test_default_widths_and_cost_input(tmp_path):
    cfgs = {b: SR.build_config(b, sr.SuperResolution.DEFAULT_DATA, "short", tmp_path, 0) for b in ("binealnet", "int8")}
    assert cfgs["binealnet"].bench.channels == 64 and cfgs["binealnet"].bench.width == 2.0
    assert cfgs["int8"].bench.channels == 32 and cfgs["int8"].bench.head_precision == "int8"
    assert [tuple(x.shape) for x in SR.example_inputs("short")] == [(1, 3, 180, 320)]
    assert SR.build_config("fp32", sr.SuperResolution.DEFAULT_DATA, "short", tmp_path, 0,
                           device="cuda").optim_wrapper.type == "AmpOptimWrapper"
    with pytest.raises(DataError, match="scale"):
        SR.build_config("fp32", sr.SuperResolution.DEFAULT_DATA, "short", tmp_path, 0, scale=5)


# ---------------------------------------------------------------- data
def _copy(tmp_path):
    dst = tmp_path / "sr"
    shutil.copytree(sr.SuperResolution.DEFAULT_DATA, dst)
    return dst


def test_embedded_sample_and_layouts(tmp_path):
    root = sr.SuperResolution.DEFAULT_DATA
    SR.validate_data(root)
    info = SR.data_info(root, "smoke")
    assert (info["train_folder"], info["test_folder"], info["train_images"], info["test_images"]) == ("T91", "Set5", 6, 2)
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) < 1_000_000
    assert (root / "SOURCE.md").is_file()
    # train/ + test/ layout, and a bare image folder (train AND test, said in the record)
    d = tmp_path / "tt"
    shutil.copytree(root / "T91", d / "train")
    shutil.copytree(root / "Set5", d / "test")
    assert SR.data_info(d)["test_folder"] == "test"
    assert "AND" in SR.data_info(root / "Set5")["layout"]
    assert SR.data_info(root, test_set="T91")["test_folder"] == "T91"


@pytest.mark.skipif(not (SHARED_SR / "T91").is_dir(), reason="../shared/data/sr not present")
def test_shared_t91_set5_layout():
    SR.validate_data(SHARED_SR)
    info = SR.data_info(SHARED_SR, "short")
    assert (info["train_images"], info["test_images"]) == (91, 5)


def test_grayscale_and_rgba_are_converted(tmp_path):
    rgb = Image.open(SET5_IMAGE).convert("RGB").crop((0, 0, 30, 27))  # 27: not a multiple of 2 or 4
    rgb.convert("L").save(tmp_path / "g.png")
    rgba = rgb.copy()
    rgba.putalpha(7)
    rgba.save(tmp_path / "a.png")
    g = sr.load_rgb(tmp_path / "g.png", 4)
    assert g.shape == (3, 24, 28) and torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # mod-cropped
    a = sr.load_rgb(tmp_path / "a.png", 2)
    assert a.shape == (3, 26, 30) and torch.equal(a, torch.from_numpy(np.asarray(rgb)).permute(2, 0, 1)[:, :26])


def _raises(fn, *needles):
    with pytest.raises(DataError) as e:
        fn()
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_bad_inputs(tmp_path):
    root = _copy(tmp_path)
    _raises(lambda: SR.validate_data(tmp_path / "nope"), "nope", "not found")
    empty = tmp_path / "empty"
    (empty / "Set5").mkdir(parents=True)
    _raises(lambda: SR.validate_data(empty), "Set5", "no images")
    (tmp_path / "bare").mkdir()
    _raises(lambda: SR.validate_data(tmp_path / "bare"), "bare", "no test folder")
    # a 16-bit PNG: one error naming it (PIL would silently drop the low byte)
    Image.fromarray(np.full((40, 40), 3000, dtype=np.uint16)).save(root / "Set5" / "deep.png")
    _raises(lambda: SR.validate_data(root), "deep.png", "16-bit")
    (root / "Set5" / "deep.png").unlink()
    (root / "Set5" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _raises(lambda: SR.validate_data(root), "broken.png", "cannot read")
    (root / "Set5" / "broken.png").unlink()
    Image.open(SET5_IMAGE).convert("RGB").crop((0, 0, 20, 30)).save(root / "Set5" / "tiny.png")
    _raises(lambda: SR.validate_data(root), "tiny.png", "20x30")
    (root / "Set5" / "tiny.png").unlink()
    # a training image smaller than the schedule's HR patch (72 in short): named when the loader is built
    _raises(lambda: sr.SRDataset(root / "T91", 4, train=True, hr_patch=96, patches_per_epoch=4), "t20_c78.png",
            "78x78")
    # test folder only: training says what it expected
    only_test = tmp_path / "ot"
    shutil.copytree(root / "Set5", only_test / "Set5")
    SR.validate_data(only_test)
    _raises(lambda: sr.SRDataset(None, 4, train=True, hr_patch=48, patches_per_epoch=4), "no training folder")


def test_training_patches_are_aligned(tmp_path):
    ds = sr.SRDataset(sr.SuperResolution.DEFAULT_DATA / "T91", 3, train=True, hr_patch=48, patches_per_epoch=20)
    torch.manual_seed(0)
    for i in range(20):
        item = ds[i]
        lr, hr = item["inputs"], item["data_samples"]
        assert lr.shape == (3, 16, 16) and hr.shape == (3, 48, 48)
        # flips / rotations are applied to both: the LR patch is (close to) the bicubic of the HR patch
        # inside (the patch border sees pixels outside the crop)
        est = sr.make_lr(hr, 3).int()
        assert (est - lr.int())[:, 2:-2, 2:-2].abs().float().mean() < 1.0


# ---------------------------------------------------------------- training through mmengine
def _run(cfg, train=True):
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    if train:
        runner.train()
    return runner, runner.test()


@pytest.mark.parametrize("backbone", ["binealnet", "int8", "fp32"])
def test_smoke_training_per_backbone(tmp_path, backbone):
    cfg = SR.build_config(backbone, sr.SuperResolution.DEFAULT_DATA, "smoke", tmp_path, 0, scale=2, width=0.25)
    runner, metrics = _run(cfg)
    assert runner.iter == 2 and math.isfinite(metrics["psnr"]) and 0 < metrics["ssim"] < 1
    assert (tmp_path / "epoch_1.pth").is_file()


def test_bicubic_row_tests_only(tmp_path):
    cfg = SR.build_config("bicubic", sr.SuperResolution.DEFAULT_DATA, "smoke", tmp_path, 0, scale=4)
    assert cfg.train_dataloader is None and cfg.optim_wrapper is None and cfg.train_cfg is None
    _, metrics = _run(cfg, train=False)
    # the same numbers straight from the functions, on the two test crops the smoke schedule uses
    expected = []
    for f in sorted((sr.SuperResolution.DEFAULT_DATA / "Set5").iterdir())[:2]:
        hr = sr.load_rgb(f, 4)
        lr = sr.make_lr(hr, 4)[None].float() / 255
        up = sr.imresize(lr, 4, down=False)
        expected.append(sr.psnr_y(up, hr[None].double() / 255, 4))
    assert metrics["psnr"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert 20 < metrics["psnr"] < 40
