"""Deployed kernels against the fake-quant model (the oracle): packed 1-bit conv exact on integers,
whole BiNealNet / INT8 backbones close, export round trip, and the bad-input errors.

The first run compiles backbones/deploy/bitconv.cpp (cached under ~/.cache/binealbench); tests that
need it skip only when no C++ compiler exists, and say so."""
import copy
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import backbones
from backbones import deploy
from backbones.deploy import _ext
from backbones.layers import QConv2d
from backbones.quantizers import BinaryActivationQuantizer, BinaryWeightQuantizer

needs_compiler = pytest.mark.skipif(_ext.compiler() is None, reason="no C++ compiler: packed kernels cannot be built")


def _paths():
    """Every kernel path this CPU can run (the AVX-512 one only where the CPU has VPOPCNTDQ)."""
    ops = _ext.load()
    out = ["scalar"]
    for p in ("avx2", "avx512"):
        try:
            ops.cpu_path(p)
            out.append(p)
        except RuntimeError:
            pass
    return out


def _paths_and_words():
    """(path, word bits) of every kernel this CPU runs: 64-bit words on each path, 32-bit ones on AVX-512 and AVX2."""
    return [(p, 64) for p in _paths()] + [(p, 32) for p in _paths() if p != "scalar"]


def _words(wp, cin, k, bits):
    return wp if bits == 64 else deploy.model.dword_weights(wp, cin, k * k)


def _qconv(cin, cout, k, stride, padding, dilation, scales_after=False):
    conv = QConv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=False,
                   weight_quantizer=BinaryWeightQuantizer((cout, cin, k, k)), act_quantizer=BinaryActivationQuantizer(cin),
                   scales_after=scales_after)
    with torch.no_grad():  # learned-looking values, so the quantizer's float ops matter
        conv.weight_quantizer.alpha.uniform_(0.5, 2)
        conv.act_quantizer.b0.uniform_(-0.3, 0.3)
        conv.act_quantizer.b1.uniform_(-0.3, 0.3)
        conv.act_quantizer.slope.uniform_(-0.2, 0.5)  # negatives are clipped to 0 (clip_slope)
        conv.act_quantizer.gamma.fill_(0.7)
    return conv.eval()


# every (k, stride, padding, dilation) the backbones use: 3x3 s1/s2 p1, dilated 3x3 d2/d4, 1x1 and 3x3 s2 downsample
CONFIGS = [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (3, 1, 4, 4), (1, 2, 0, 1), (1, 1, 0, 1)]


@needs_compiler
@pytest.mark.parametrize("k,stride,padding,dilation", CONFIGS)
# partial words, O below one 16-channel block, and (70, 37): two full blocks plus a partial one; 200 channels
# give 3x3 windows of 36 words (the AVX2 byte counts are flushed every 31 words, mid-row); widths 9 and 5
# (odd) run the widest tiles and the 1-pixel remainder
@pytest.mark.parametrize("cin,cout", [(96, 10), (13, 5), (200, 7), (70, 37)])
def test_packed_conv_equals_fake_quant_on_integers(k, stride, padding, dilation, cin, cout):
    torch.manual_seed(cin + k + dilation)
    conv = _qconv(cin, cout, k, stride, padding, dilation)
    x = torch.randn(2, cin, 11, 9)
    aq, wq = conv.act_quantizer, conv.weight_quantizer
    with torch.no_grad():
        a, w = aq.unit(x), wq.unit(conv.weight)  # the fake-quant model's own +-1 values
        ref = F.conv2d(F.pad(a, (padding,) * 4, value=-1.0), w, None, stride, 0, dilation).round().int()
    ops = _ext.load()
    wp = ops.pack_weight(w.permute(0, 2, 3, 1).contiguous())
    slope = aq.slope.detach().clamp(min=0)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    empty = torch.empty(0)
    for path, bits in _paths_and_words():
        xp = ops.pack_act(x_nhwc, aq.b0.detach(), slope, aq.b1.detach(), padding, padding, path, bits)
        got = ops.binary_conv(xp, _words(wp, cin, k, bits), cin, k, k, stride, dilation, empty, empty, empty, path)
        assert got.dtype == torch.int32
        assert torch.equal(got.permute(0, 3, 1, 2), ref), (path, bits)
    # the float epilogue (dot * scale + bias + residual): every path bit for bit the plain scalar one's
    scale, bias = torch.rand(cout) + 0.5, torch.randn(cout)
    res = torch.randn(ref.permute(0, 2, 3, 1).shape)
    outs = {(p, bits): ops.binary_conv(ops.pack_act(x_nhwc, aq.b0.detach(), slope, aq.b1.detach(), padding, padding,
                                                    "scalar", bits), _words(wp, cin, k, bits), cin, k, k, stride,
                                       dilation, scale, bias, res, p) for p, bits in _paths_and_words()}
    for p, o in outs.items():
        assert torch.equal(o, outs[("scalar", 64)]), p
    # scaled: the whole fake-quant layer (scales before and after the conv) vs the deployed one
    for scales_after in (False, True):
        c = copy.deepcopy(conv)  # fresh: the layer's eval border cache is keyed on weights, not on this switch
        c.scales_after = scales_after
        bn = nn.BatchNorm2d(cout).eval()  # identity BN: compares the conv alone
        got = deploy.model.BinConv.from_qconv(c, bn)(x_nhwc).permute(0, 3, 1, 2)
        with torch.no_grad():
            torch.testing.assert_close(got, c(x), rtol=1e-5, atol=1e-4)


@needs_compiler
@pytest.mark.parametrize("cin,cout,h,w,k,stride,padding,dilation", [
    (64, 32, 6, 8, 3, 1, 1, 1),      # whole words and blocks, even output width (no 1-pixel remainder)
    (2048, 100, 5, 6, 3, 1, 1, 1),   # 288-word windows: weights in 3 groups of blocks, the last one short
    (2048, 100, 9, 7, 3, 2, 2, 2),   # the same, dilated (one run per tap, 32 words, flushed inside a run)
    (1, 17, 7, 7, 3, 1, 1, 1),       # a single channel
])
def test_packed_conv_blocking_edges_and_threads(cin, cout, h, w, k, stride, padding, dilation):
    torch.manual_seed(cin + cout)
    x = torch.randn(2, cin, h, w)
    wt = torch.randn(cout, cin, k, k).sign()
    ref = F.conv2d(F.pad(torch.where(x < 0, -1.0, 1.0), (padding,) * 4, value=-1.0), wt, None, stride, 0,
                   dilation).round().int()
    ops = _ext.load()
    wp = ops.pack_weight(wt.permute(0, 2, 3, 1).contiguous())
    empty = torch.empty(0)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):  # the work split between threads must not change a value
            torch.set_num_threads(threads)
            for path, bits in _paths_and_words():
                xp = ops.pack_act(x.permute(0, 2, 3, 1).contiguous(), empty, empty, empty, padding, padding, path, bits)
                got = ops.binary_conv(xp, _words(wp, cin, k, bits), cin, k, k, stride, dilation, empty, empty, empty,
                                      path)
                assert torch.equal(got.permute(0, 3, 1, 2), ref), (path, bits, threads)
                # weights blocked once ahead (as a deployed conv holds them): the same values
                got = ops.binary_conv(xp, ops.block_weight(_words(wp, cin, k, bits)), cin, k, k, stride, dilation,
                                      empty, empty, empty, path, cout)
                assert torch.equal(got.permute(0, 3, 1, 2), ref), (path, bits, threads, "blocked")
    finally:
        torch.set_num_threads(old)
    xp = ops.pack_act(x.permute(0, 2, 3, 1).contiguous(), empty, empty, empty, padding, padding, "auto")
    with pytest.raises(RuntimeError, match="need O in"):  # blocked weights cannot say how many channels are real
        ops.binary_conv(xp, ops.block_weight(wp), cin, k, k, stride, dilation, empty, empty, empty, "auto", -1)


def _randomize(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(-1.5, 1.5)  # negative BN factors too (INT8 flips its integers)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, BinaryActivationQuantizer):
                m.b0.uniform_(-0.2, 0.2)
                m.b1.uniform_(-0.2, 0.2)
                m.slope.uniform_(0, 0.5)
    return model.eval()


def _agreement(model, deployed, x):
    head = nn.Linear(model.out_channels[-1], 10)
    with torch.no_grad():
        return head(model(x)[-1].mean(dim=(2, 3))), head(deployed(x)[-1].mean(dim=(2, 3)))


@needs_compiler
@pytest.mark.parametrize("kw", [dict(downsample_kernel=3), dict(downsample_kernel=1, scales_after=True),
                                dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), out_indices=(0, 1, 2, 3))])
def test_deployed_binealnet_agrees_with_fake_quant(kw):
    model = _randomize(backbones.build("binealnet", width=0.25, stem="cifar", **{"out_indices": (3,), **kw}))
    deployed = deploy.deploy_backbone(model, stem="fp32")  # bit for bit up to the float sums' order
    x = torch.randn(16, 3, 20, 20)
    ref, got = _agreement(model, deployed, x)
    with torch.no_grad():
        for r, g in zip(model(x), deployed(x)):
            assert r.shape == g.shape
            # a float sum in another order can flip a sign that sits at 0 to rounding; rare, so allow a sliver
            close = torch.isclose(g, r, rtol=1e-3, atol=1e-3)
            assert close.float().mean() > 0.999, (r - g).abs().max()
    assert torch.equal(ref.argmax(1), got.argmax(1))


@needs_compiler
def test_export_round_trip_and_true_size(tmp_path):
    model = _randomize(backbones.build("binealnet", width=0.25, stem="cifar", out_indices=(3,)))
    deployed = deploy.deploy_backbone(model)
    n = deploy.save(deployed, tmp_path / "m.pt")
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # plain tensors only
    assert raw["format"] == deploy.FORMAT
    again = deploy.load(tmp_path / "m.pt")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(deployed(x)[0], again(x)[0])
    # packed words: one bit per binary weight (+ the last word's unused bits), far below float32
    binary_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, QConv2d))
    words = sum(b[k].wp.numel() for b in deployed.blocks for k in ("conv1", "conv2", "ds") if b[k] is not None)
    assert binary_weights / 64 <= words <= binary_weights / 64 * 2
    assert n < sum(p.numel() for p in model.parameters()) * 4 / 4


def test_int8_deployed_agrees_with_fake_quant():
    model = backbones.build("int8", width=0.25, stem="cifar", out_indices=(3,))
    torch.manual_seed(2)
    calib = torch.randn(32, 3, 16, 16)
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(calib)  # observe the activation scales, as training does
    _randomize(model)
    deployed = deploy.deploy_backbone(model, calib=calib)
    x = torch.randn(64, 3, 16, 16)
    ref, got = _agreement(model, deployed, x)
    with torch.no_grad():
        r, g = model(x)[0], deployed(x)[0]
    # one extra rounding per residual (the requantized conv outputs): close, not equal
    assert (r - g).abs().mean() < 0.05 * r.abs().mean()
    assert (ref.argmax(1) == got.argmax(1)).float().mean() >= 0.9
    q = deployed.blocks[0]["conv1"]
    assert q.qw.dtype == torch.int8 and q.packed is not None


def test_fp32_deployed_equals_float_model():
    model = _randomize(backbones.build("fp32", width=0.25, stem="cifar", out_indices=(3,)))
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(deploy.deploy_backbone(model)(x)[0], model(x)[0], rtol=1e-4, atol=1e-4)


def test_unsupported_variant_and_unwritable_path(tmp_path):
    with pytest.raises(deploy.DeployError, match="binary-weights"):
        deploy.deploy_backbone(backbones.build("binealnet", width=0.25, precision="binary-weights").eval())
    m = backbones.build("fp32", width=0.25, stem="cifar").eval()
    (tmp_path / "a_file").write_text("")  # a folder that cannot exist (root ignores chmod, not this)
    with pytest.raises(deploy.DeployError, match="cannot write"):
        deploy.save(deploy.deploy_backbone(m), tmp_path / "a_file" / "x.pt")


def test_no_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    _ext.load.cache_clear()
    try:
        with pytest.raises(_ext.KernelUnavailable, match="no C.. compiler"):
            _ext.load()
        ok, why = _ext.available()
        assert not ok and "no-such-compiler-xyz" in why
    finally:
        _ext.load.cache_clear()
    assert shutil.which("no-such-compiler-xyz") is None


def _fake_run(tmp_path, backbone, variant=None):
    """A classification run folder as `bench run` leaves it (bench_run.json + an mmengine checkpoint),
    built without training: the deploy path is what is under test, on the embedded sample."""
    import json

    import tasks
    from bench.deploy import REPO
    from mmengine.registry import MODELS, init_default_scope
    import backbones.openmmlab  # noqa: F401
    task = tasks.get("classification")
    data = REPO / "data" / "cifar10-sample"
    work = tmp_path / backbone
    cfg = task.build_config(backbone, data, "smoke", work, 0, variant=variant, width=0.25)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    # trained-looking BN statistics and quantizer offsets: at init, pre-activations are often exactly 0, where
    # the fake-quant model's own float rounding (not the kernel) decides the sign
    _randomize(model.backbone)
    work.mkdir()
    torch.save({"state_dict": model.state_dict(), "meta": {}}, work / "epoch_1.pth")
    (work / "bench_run.json").write_text(json.dumps(dict(
        task="classification", backbone=backbone, variant=variant, data=str(data), schedule="smoke", epochs=None,
        seed=0, task_options={"width": 0.25}, recipe=None, teacher=None)))
    return work / "epoch_1.pth", model


@needs_compiler
def test_bench_deploy_checkpoint_record_and_table(tmp_path):
    from bench import deploy as bd
    ckpt, model = _fake_run(tmp_path, "binealnet")
    # fp32 stem: the oracle holds bit for bit up to sign ties; an untrained net amplifies a bf16 stem's rounding
    rec = bd.deploy_checkpoint(ckpt, results_dir=tmp_path / "res", repeats=1, batch=2, stem="fp32")
    assert rec["kernel"].startswith("packed 1-bit") and rec["export_bytes"] == Path(rec["export_file"]).stat().st_size
    assert rec["argmax_agreement"] >= 0.95 and abs(rec["top1_deployed"] - rec["top1_fake_quant"]) <= 0.05
    assert rec["test_images"] == 100 and set(rec["latency_ms_batch1"]) == {"1", "2"}
    assert rec["stem"] == "fp32" and "stem conv" not in rec["kernel"] and rec["command"].endswith("--stem fp32")
    table = (tmp_path / "res" / "deploy.md").read_text()
    assert "| binealnet | smoke | packed 1-bit" in table and "Smoke-trained" in table
    # the exported file alone reproduces the model (no project model classes needed to read it)
    raw = torch.load(rec["export_file"], weights_only=True)
    assert raw["backbone"]["kind"] == "binary" and raw["meta"]["checkpoint"] == str(ckpt)


def test_bench_deploy_refuses_a_variant_without_kernels(tmp_path):
    from bench import deploy as bd
    from tasks.base import BenchError
    ckpt, _ = _fake_run(tmp_path, "binealnet", variant="binary-activations")
    with pytest.raises(BenchError, match="binary-activations.*no deployed kernel"):
        bd.deploy_checkpoint(ckpt, results_dir=tmp_path / "res", repeats=1, batch=2)


@needs_compiler
@pytest.mark.parametrize("task,backbone", [("detection", "binealnet"), ("detection", "int8")])
def test_bench_deploy_dense_backbone(tmp_path, task, backbone):
    """A detector's backbone on the kernels (segmentation takes the same path): the same feature maps
    as the fake-quant backbone, the same test metric as the run recorded (re-evaluated), a record
    whose columns join the run's row. The run's record is found in --records-dir."""
    import shutil

    from bench import results
    from bench.cli import main
    res, runs, wd = tmp_path / "res", tmp_path / "runs", tmp_path / "wd"
    assert main(["run", "--task", task, "--backbone", backbone, "--width", "0.25", "--results-dir", str(runs),
                 "--work-dir", str(wd)]) == 0
    ckpt = (wd / "last_checkpoint").read_text().strip()
    assert main(["deploy", ckpt, "--results-dir", str(res), "--records-dir", str(runs), "--repeats", "3",
                 "--stem", "fp32"]) == 0
    shutil.copytree(runs / task, res / task)  # the report reads runs and deployments from one results dir
    (f,) = (res / "deploy" / task).glob("*.json")
    d = json.loads(f.read_text())
    (run_rec,) = (res / task).glob("*.json")
    assert d["timed"] == "backbone" and Path(d["record"]).name == run_rec.name  # no machine path in a record
    assert d["stem"] == "fp32" and "stem conv" not in d["kernel"]
    assert d["metric_fake_quant"] == json.loads(run_rec.read_text())["metric"]["value"] == d["metric_recorded"]
    assert d["max_rel_feature_diff"] < (1e-4 if backbone == "binealnet" else 0.1)  # INT8: one extra rounding
    assert d["export_bytes"] > 0 and d["latency_ms_batch1"]["1"] > 0
    engines = (d.get("engines") or {}).get("engines", {})
    if backbone == "int8" and importlib.util.find_spec("onnx"):  # the ONNX engines run the same backbone
        assert engines and all(r["latency_ms_batch1"]["1"] > 0 for r in engines.values())
        assert all(r["rel_rms_feature_diff_vs_torch"] < 0.1 for r in engines.values()), engines  # a wrong graph: ~1
    else:
        assert not engines  # binary: the packed kernels only
    assert f"## {task}: the backbone on the kernels" in (res / "deploy.md").read_text()
    results.report(res)
    assert "deployed b1 1T (ms)" in (res / f"{task}.md").read_text()


@needs_compiler
@pytest.mark.parametrize("strides,dilations", [((1, 2, 2, 2), (1, 1, 1, 1)), ((1, 2, 1, 1), (1, 1, 2, 4))])
def test_deployed_segmentation_backbones_equal_fake_quant(strides, dilations):
    """FCN-D8's strides and dilations, every stage output (a trained-like state: no sign ties at 0)."""
    torch.manual_seed(0)
    bb = _randomize(backbones.build("binealnet", width=0.25, strides=strides, dilations=dilations,
                                    out_indices=(0, 1, 2, 3)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(deploy.deploy_backbone(bb, x, stem="fp32")(x), bb(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@needs_compiler
def test_inner_loop_microbenchmark_runs_and_checks_its_input():
    ops = _ext.load()
    assert ops.tile_peak(8, 10, 2, "auto") > 0 and ops.tile_peak(8, 10, 4, "scalar") > 0
    with pytest.raises(RuntimeError, match="pixels must be"):
        ops.tile_peak(8, 10, 3, "auto")
    with pytest.raises(RuntimeError, match="must be >= 1"):
        ops.tile_peak(0, 10, 2, "auto")
    with pytest.raises(RuntimeError, match="unit must be 64 or 32"):
        ops.tile_peak(8, 10, 2, "auto", 16)
    for path, bits in _paths_and_words():
        assert ops.tile_peak(40, 10, 2, path, bits) > 0  # 80 32-bit words: the AVX2 byte counts flush mid-run


@needs_compiler
def test_binary_breakdown_times_every_binary_conv():
    """bench224's per-conv record: one entry per binary conv of the backbone, their times adding up to the
    binary-convs step, each rate its own MACs over its own time."""
    from bench.deploy import binary_breakdown
    m = _randomize(backbones.build("binealnet", width=0.25, stem="imagenet", out_indices=(3,)))
    d = deploy.deploy_backbone(m, calib=torch.randn(2, 3, 64, 64))
    parts, convs = binary_breakdown(d, torch.randn(1, 3, 64, 64), repeats=2)
    n = sum(1 for b in d.blocks for name in ("ds", "conv1", "conv2") if b[name] is not None)
    assert len(convs) == n and [c["block"] for c in convs] == sorted(c["block"] for c in convs)
    assert sum(c["ms"] for c in convs) == pytest.approx(parts["binary_convs"], abs=1e-3 * n)
    for c in convs:
        h, w, o = c["out_nhwc"][1:]
        assert c["gmac_per_s"] == pytest.approx(h * w * o * c["in_nhwc"][3] * c["k"] ** 2 / c["ms"] / 1e6, rel=0.01)


@needs_compiler
@pytest.mark.parametrize("k,stride,pad,relu", [(3, 2, 1, False), (3, 2, 1, True), (1, 1, 0, True), (3, 1, 1, False)])
@pytest.mark.parametrize("c", [96, 13])  # whole 8-channel steps, and a remainder
def test_stem_max_pool_equals_torch(k, stride, pad, relu, c):
    """The kernels' NHWC max-pool (+ ReLU): float in, bit for bit torch's; bf16 in, torch's on the widened values."""
    torch.manual_seed(c + k)
    x = torch.randn(2, c, 11, 9)
    x[0, :, 3, 4] = 0.0  # ties with the ReLU's 0
    ops = _ext.load()
    for src in (x, x.bfloat16()):
        ref = F.max_pool2d(src.float(), k, stride, pad)
        ref = F.relu(ref) if relu else ref
        for path in _paths():
            got = ops.max_pool(src.permute(0, 2, 3, 1).contiguous(), k, stride, pad, relu, path)
            assert got.dtype == torch.float32 and torch.equal(got.permute(0, 3, 1, 2), ref), (path, src.dtype)
    with pytest.raises(RuntimeError, match="pad <= k/2"):
        ops.max_pool(x.permute(0, 2, 3, 1).contiguous(), 3, 2, 2, False, "auto")


def test_bf16_stem_rounds_inputs_and_weights_only():
    """The bf16 stem conv = the fp32 conv of bf16-rounded input, weights and bias, rounded to bf16 (oneDNN sums in
    fp32: at most an output rounding apart); 'auto' picks it for binary backbones on CPUs with native bf16 only."""
    torch.manual_seed(3)
    conv, bn = nn.Conv2d(3, 24, 7, 2, 3, bias=False), _randomize(nn.BatchNorm2d(24))
    fp32 = deploy.model.FloatConv.from_conv(conv, bn)
    bf16 = deploy.model.FloatConv.from_conv(conv, bn, "bf16")
    x = torch.randn(2, 3, 40, 36).contiguous(memory_format=torch.channels_last)
    r = lambda t: t.bfloat16().float()  # noqa: E731
    ref = F.conv2d(r(x), r(fp32.weight), r(fp32.bias), 2, 3)
    got = bf16(x)
    assert got.dtype == torch.bfloat16 and got.shape == ref.shape
    torch.testing.assert_close(got.float(), ref, rtol=2 ** -7, atol=1e-5)  # one bf16 rounding (2^-8) and change
    assert (got.float() - fp32(x)).abs().max() > 0  # really rounded (the fp32 conv differs)
    native = deploy.model.native_bf16()
    assert deploy.stem_precision("auto", "binary") == ("bf16" if native else "fp32")
    assert deploy.stem_precision("auto", "int8") == deploy.stem_precision("auto", "fp32") == "fp32"
    assert deploy.stem_precision("bf16", "fp32") == "bf16"
    with pytest.raises(deploy.DeployError, match="stem precision must be one of"):
        deploy.stem_precision("fp16", "binary")


@needs_compiler
def test_bf16_stem_deployed_close_and_saved(tmp_path):
    """A bf16-stem deployment: the stem's output rounded, the rest the same kernels; saved and loaded with it."""
    model = _randomize(backbones.build("binealnet", width=0.25, stem="imagenet", out_indices=(0,)))
    d = deploy.deploy_backbone(model, stem="bf16")
    x = torch.randn(2, 3, 64, 64)
    deploy.save(d, tmp_path / "m.pt")
    again = deploy.load(tmp_path / "m.pt")
    assert again.stem.precision == "bf16" and torch.equal(again(x)[0], d(x)[0])
    with torch.no_grad():  # the pooled stem output: the fp32 one to bf16 precision (8-bit mantissa)
        y32 = deploy.deploy_backbone(model, stem="fp32")
        xc = x.contiguous(memory_format=torch.channels_last)
        a, b = d.stem_pool(d.stem(xc)), y32.stem_pool(y32.stem(xc))
        torch.testing.assert_close(a, b, rtol=2 ** -6, atol=2 ** -6 * float(b.abs().max()))
