"""INT8 / FP32 exported to ONNX and run on production engines (OpenVINO, ONNX Runtime) against the
fake-quant model (the oracle), the QDQ graph's scales against the trained quantizers, the peak model's
arithmetic, and the bad-input errors. Engine tests skip when the engine is not installed
(`pip install -e '.[deploy]'`; the test extra installs them)."""
import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import backbones
from backbones import deploy
from backbones.quantizers import Int8Quantizer

onnx = pytest.importorskip("onnx", reason="onnx not installed: pip install -e '.[deploy]'")
ENGINES = [e for e in ("onnxruntime", "openvino") if importlib.util.find_spec(e) is not None]


def _int8_model(width=0.25, size=16):
    model = backbones.build("int8", width=width, stem="cifar", out_indices=(3,))
    torch.manual_seed(2)
    calib = torch.randn(32, 3, size, size)
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(calib)  # observe the activation scales, as training does
        for m in model.modules():  # trained-looking BN (negative factors too: INT8 flips its integers)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval(), calib


def _inits(path):
    g = onnx.load(str(path)).graph
    return g, {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}


def test_qdq_graph_carries_the_trained_scales_and_integers(tmp_path):
    from backbones.deploy.onnx_export import export_onnx
    from backbones.deploy.model import _act_scale
    model, calib = _int8_model()
    d = deploy.deploy_backbone(model, calib=calib)
    export_onnx(d, tmp_path / "m.onnx", (1, 3, 16, 16), calib)
    g, init = _inits(tmp_path / "m.onnx")
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == 1 + sum(1 for m in model.modules() if m.__class__.__name__ == "QConv2d")
    producer = {o: n for n in g.node for o in n.output}
    # the first block's conv1: its input is DQ at the trained activation scale, its weights the fake-quant integers
    conv1 = model.stages[0][0].conv1
    c = convs[1]
    x_dq, w_dq = producer[c.input[0]], producer[c.input[1]]
    assert x_dq.op_type == "DequantizeLinear" and float(init[x_dq.input[1]].item()) == pytest.approx(
        _act_scale(conv1.act_quantizer), rel=1e-6)
    assert init[x_dq.input[2]].dtype == np.uint8
    q = init[w_dq.input[0]]
    with torch.no_grad():
        s = conv1.weight_quantizer.scale(conv1.weight)
        ref = torch.round(conv1.weight_quantizer(conv1.weight) / s.view(-1, 1, 1, 1))
    k = model.stages[0][0].bn1.weight / torch.sqrt(model.stages[0][0].bn1.running_var + model.stages[0][0].bn1.eps)
    ref = (ref * torch.sign(k).view(-1, 1, 1, 1)).detach().numpy()
    assert q.dtype == np.int8 and np.array_equal(q.astype(np.float32), ref)
    # every conv input and weight is quantized: the graph is QDQ throughout (the stem too)
    for c in convs:
        assert producer[c.input[0]].op_type == "DequantizeLinear" and producer[c.input[1]].op_type == "DequantizeLinear"


@pytest.mark.skipif(not ENGINES, reason="neither onnxruntime nor openvino installed: pip install -e '.[deploy]'")
@pytest.mark.parametrize("engine", ENGINES)
def test_int8_on_engine_agrees_with_fake_quant(tmp_path, engine):
    from backbones.deploy.engines import EngineModel
    from backbones.deploy.onnx_export import export_onnx
    model, calib = _int8_model()
    d = deploy.deploy_backbone(model, calib=calib)
    export_onnx(d, tmp_path / "m.onnx", (1, 3, 16, 16), calib)
    m = EngineModel(engine, tmp_path / "m.onnx", threads=1)
    x = torch.randn(64, 3, 16, 16)
    head = nn.Linear(model.out_channels[-1], 10)
    with torch.no_grad():
        ref, got = model(x)[0], m(x)
        assert got.shape == ref.shape
        # the fake-quant model plus a few roundings (the stem's, the identity's, int32 biases): close, not equal
        assert (ref - got).abs().mean() < 0.06 * ref.abs().mean()
        agree = (head(ref.mean(dim=(2, 3))).argmax(1) == head(got.mean(dim=(2, 3))).argmax(1)).float().mean()
    assert agree >= 0.9


@pytest.mark.skipif(not ENGINES, reason="neither onnxruntime nor openvino installed")
@pytest.mark.parametrize("engine", ENGINES)
def test_fp32_classifier_on_engine_equals_float_model(tmp_path, engine):
    from backbones.deploy.engines import EngineModel
    from backbones.deploy.onnx_export import export_onnx
    bb = backbones.build("fp32", width=0.25, stem="imagenet", out_indices=(3,))
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2)
                m.bias.uniform_(-0.5, 0.5)
    bb.eval()
    d = deploy.deploy_backbone(bb)
    head_w, head_b = torch.randn(10, bb.out_channels[-1]), torch.randn(10)
    mean, std = torch.tensor([120.0, 115, 100]), torch.tensor([60.0, 58, 57])
    clf = deploy.DeployedClassifier(d, head_w, head_b, mean, std)
    export_onnx(clf, tmp_path / "f.onnx", (1, 3, 32, 32))
    x = torch.randint(0, 256, (4, 3, 32, 32)).float()
    with torch.no_grad():
        ref = nn.functional.linear(bb((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))[0].mean(dim=(2, 3)),
                                   head_w, head_b)
    torch.testing.assert_close(EngineModel(engine, tmp_path / "f.onnx", 1)(x), ref, rtol=1e-3, atol=1e-3)


def test_uncalibrated_int8_and_missing_calib_are_clear_errors(tmp_path):
    from backbones.deploy.onnx_export import export_onnx
    fresh = backbones.build("int8", width=0.25, stem="cifar", out_indices=(3,)).eval()
    for m in fresh.modules():
        assert not isinstance(m, Int8Quantizer) or not bool(m.observed)
    with pytest.raises(deploy.DeployError, match="never observed.*never trained or calibrated"):
        deploy.deploy_backbone(fresh, calib=torch.randn(2, 3, 16, 16))  # the step before any export
    model, calib = _int8_model()
    with pytest.raises(deploy.DeployError, match="calib"):
        export_onnx(deploy.deploy_backbone(model, calib=calib), tmp_path / "y.onnx", (1, 3, 16, 16), None)


def test_missing_engine_names_the_install(monkeypatch, tmp_path):
    from backbones.deploy import engines
    real = importlib.util.find_spec
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    assert "openvino" not in engines.available_engines()
    with pytest.raises(deploy.DeployError, match=r"openvino is not installed: pip install"):
        engines.EngineModel("openvino", tmp_path / "m.onnx")


# ---------------------------------------------------------------- the per-instruction-set peak model
def test_roofline_classes_from_flags_and_floor_arithmetic():
    from bench import roofline
    assert roofline.this_cpu({"avx2", "fma"}).name == "avx2"
    assert roofline.this_cpu({"avx2", "avx512f", "avx512_vnni"}).name == "avx512-vnni"
    assert roofline.this_cpu({"avx2", "avx512_vnni", "avx512_vpopcntdq"}).name == "avx512-vpopcntdq"
    assert roofline.this_cpu({"avx2", "avx512_vnni", "avx512_vpopcntdq", "amx_int8"}).name == "amx-int8"
    assert roofline.this_cpu({"fp", "asimd", "asimddp"}).name == "neon-dot"
    assert roofline.this_cpu({"sse2"}) is None
    isa = roofline.ISA_BY_NAME["amx-int8"]
    # hand arithmetic: 1024 binary MACs at 341/cycle + 2048 int8 at 1024/cycle + 64 fp32 at 32/cycle
    assert roofline.floor_cycles({"binary": 1024, "int8": 2048, "fp32": 64}, isa) == pytest.approx(1024 / 341 + 2 + 2)
    # the instruction-mix derivations the table states
    assert roofline.ISA_BY_NAME["amx-int8"].int8 == 16 * 16 * 64 / 16
    assert roofline.ISA_BY_NAME["avx512-vpopcntdq"].binary == pytest.approx(512 / 1.5, abs=1)


def test_roofline_macs_match_resnet18():
    from bench import roofline
    macs = roofline.backbone_macs("int8", 224)
    # ResNet-18's convolutions at 224: 1.814 GMACs (torchvision's 1.82 G less the 0.5 M fc); all int8 as deployed
    assert macs["binary"] == 0 and macs["fp32"] == 0 and macs["int8"] == pytest.approx(1.8137e9, rel=2e-3)
    b = roofline.backbone_macs("binealnet@1.0", 224)
    # 7x7/2 stem 64 x 3 x 49 x 112^2 in fp32; the rest binary, with BiNealNet's 3x3 downsample convs in place
    # of ResNet's 1x1 ones (3 convs of 6,422,528 MACs at 1x1, 9x that at 3x3)
    stem = 64 * 3 * 49 * 112 * 112
    assert b["fp32"] == stem and b["binary"] == pytest.approx(1.8137e9 - stem + 3 * 8 * 6422528, rel=2e-3)


def test_isa_section_from_a_bench224_record(tmp_path):
    from bench import deploy as bd
    rec = dict(fastest_1T={"fp32": {"engine": "openvino", "ms": 20.0}, "int8": {"engine": "openvino", "ms": 2.0},
                           "binealnet": {"engine": "packed", "ms": 10.0}}, floor_ms_1T={"fp32": 8, "int8": 0.6,
                                                                                        "binealnet": 6.0},
               floor_ghz=2.6, binary_gmac_per_s_1T=416.2,
               inner_loop_peak={"path": "avx512-vpopcntdq", "pixels": 4, "words": 36, "gmac_per_s": 832.4},
               machine={"cpu": "Test CPU", "isa": "amx-int8", "isa_flags": ["amx_int8"], "load_avg_1min_at_start": 0.5},
               commit="0123456789abcdef")
    (tmp_path / "deploy" / "bench224").mkdir(parents=True)
    (tmp_path / "deploy" / "bench224" / "test.json").write_text(json.dumps(rec))
    text = bd.write_table(tmp_path).read_text()
    assert ("| Test CPU (amx-int8; amx_int8; tree 0123456) | 0.5 | 20.0 / - (openvino) | 2.0 / - (openvino) | 10.0 / - | 0.20x | "
            "416.2 | 832.4 (avx512-vpopcntdq; whole backbone 0.50x of it) |") in text
    assert "- amx-int8: binealnet loses" in text and "- avx2: binealnet wins" in text


@pytest.mark.skipif(not ENGINES, reason="neither onnxruntime nor openvino installed")
def test_bench_deploy_int8_checkpoint_on_every_engine(tmp_path):
    """A classification INT8 run folder (observed scales, as training leaves them) through `bench deploy`:
    the record carries each engine's top-1 on the run's test set and the fastest engine."""
    import tasks
    import backbones.openmmlab  # noqa: F401
    from bench import deploy as bd
    from bench.deploy import REPO
    from mmengine.registry import MODELS, init_default_scope
    task = tasks.get("classification")
    data = REPO / "data" / "cifar10-sample"
    work = tmp_path / "int8"
    cfg = task.build_config("int8", data, "smoke", work, 0, width=0.25)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    torch.manual_seed(0)
    with torch.no_grad():
        model.backbone.train()
        for _ in range(2):
            model.backbone(torch.randn(8, 3, 32, 32))
    work.mkdir()
    torch.save({"state_dict": model.state_dict(), "meta": {}}, work / "epoch_1.pth")
    (work / "bench_run.json").write_text(json.dumps(dict(
        task="classification", backbone="int8", variant=None, data=str(data), schedule="smoke", epochs=None,
        seed=0, task_options={"width": 0.25}, recipe=None, teacher=None)))
    rec = bd.deploy_checkpoint(work / "epoch_1.pth", results_dir=tmp_path / "res", repeats=1, batch=2)
    assert set(rec["engines"]["engines"]) == set(ENGINES)
    for name, e in rec["engines"]["engines"].items():
        # the same integers and scales as torch.ops.quantized, plus the stem's and the identity's roundings
        # (an untrained model has near-ties among its logits: OpenVINO's run-to-run order of summation moves a few)
        assert abs(e["top1"] - rec["top1_deployed"]) <= 0.05 and e["agreement_with_torch"] >= 0.85, name
        assert set(e["latency_ms_batch1"]) == {"1", "2"}
    assert rec["fastest"]["latency_ms_batch1_1T"] == min(
        [rec["latency_ms_batch1"]["1"]] + [e["latency_ms_batch1"]["1"] for e in rec["engines"]["engines"].values()])
    table = (tmp_path / "res" / "deploy.md").read_text()
    assert "## INT8 and FP32 on production engines" in table and f"| int8 | - | smoke | {ENGINES[0]}" in table
