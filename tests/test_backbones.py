"""Quantizers, QConv2d and BiNealNet against independent oracles."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import backbones
from backbones import layers
from backbones.quantizers import (BinaryActivationQuantizer, BinaryWeightQuantizer, FloatQuantizer, Int8Quantizer,
                                  sign)

torch.manual_seed(0)


def _pm1(t):
    """Oracle sign with sign(0) = +1, written independently of the library."""
    out = torch.ones_like(t)
    out[t < 0] = -1
    return out


def _binary_conv(cin=4, cout=6, k=3, stride=1, padding=1, dilation=1, groups=1, scales_after=False, bias=False):
    return layers.QConv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias,
                          weight_quantizer=BinaryWeightQuantizer((cout, cin // groups, k, k)),
                          act_quantizer=BinaryActivationQuantizer(cin), scales_after=scales_after)


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (1, 1, 1, 1), (2, 1, 1, 2), (1, 2, 2, 1)])
@pytest.mark.parametrize("scales_after", [False, True])
@pytest.mark.parametrize("pad_mode", ["border", "explicit"])
def test_binary_conv_equals_float_conv_on_signs(stride, padding, dilation, groups, scales_after, pad_mode,
                                                monkeypatch):
    monkeypatch.setattr(layers.QConv2d, "pad_mode", pad_mode)
    conv = _binary_conv(4, 6, 3, stride, padding, dilation, groups, scales_after, bias=True)
    with torch.no_grad():  # non-trivial learned values
        conv.weight_quantizer.alpha.uniform_(0.5, 2)
        conv.act_quantizer.b0.uniform_(-0.3, 0.3)
        conv.act_quantizer.b1.uniform_(-0.3, 0.3)
        conv.act_quantizer.gamma.fill_(0.7)
        conv.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 9, 9)
    y = conv(x)
    aq, wq = conv.act_quantizer, conv.weight_quantizer
    pre = F.prelu(x + aq.b0.view(1, -1, 1, 1), aq.slope) + aq.b1.view(1, -1, 1, 1)
    a = F.pad(_pm1(pre), (padding,) * 4, value=-1.0)  # binary inputs are padded with -1
    w = _pm1(conv.weight * wq.alpha)  # sign(tanh(alpha w)) = sign(alpha w)
    ref = F.conv2d(a, w, None, stride, 0, dilation, groups) * wq.beta.view(1, -1, 1, 1) * aq.gamma
    ref = ref + conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    # beta was initialised to mean |W| per output channel (the XNOR scale)
    torch.testing.assert_close(wq.beta.flatten(), conv.weight.abs().mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_pad_modes_give_the_same_gradients(stride, padding, dilation, monkeypatch):
    """The ring term (border) and an explicit -1 pad are two ways to the same conv: every
    parameter and the input get the same gradient in training mode."""
    torch.manual_seed(0)
    conv = _binary_conv(4, 6, 3, stride, padding, dilation, bias=True)
    x = torch.randn(3, 4, 10, 10)
    grads = {}
    for mode in ("border", "explicit"):
        monkeypatch.setattr(layers.QConv2d, "pad_mode", mode)
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        (conv(xi) * torch.linspace(-1, 1, 6).view(1, -1, 1, 1)).square().sum().backward()
        grads[mode] = [xi.grad] + [p.grad.clone() for p in conv.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads[mode][:2])
    for g_border, g_explicit in zip(*grads.values()):
        torch.testing.assert_close(g_border, g_explicit, rtol=1e-4, atol=1e-4)


def test_int8_conv_matches_integer_arithmetic():
    torch.manual_seed(1)
    conv = layers.QConv2d(8, 5, 3, padding=1, bias=False, weight_quantizer=Int8Quantizer(per_channel=True),
                          act_quantizer=Int8Quantizer(per_channel=False, unsigned=True))
    x = torch.rand(2, 8, 7, 7) * 3
    conv.train()
    conv(x)  # observe the activation range
    conv.eval()
    y = conv(x)
    # independent integer path: quantize, int32 accumulate, dequantize
    s_a = x.abs().max() / 255
    q_a = torch.clamp(torch.round(x / s_a), 0, 255).to(torch.int32)
    s_w = conv.weight.abs().amax(dim=(1, 2, 3)) / 127
    q_w = torch.clamp(torch.round(conv.weight / s_w.view(-1, 1, 1, 1)), -127, 127).to(torch.int32)
    acc = F.conv2d(q_a.double(), q_w.double(), padding=1)  # exact integers in float64
    assert torch.equal(acc, acc.round()) and acc.abs().max() < 2 ** 31
    ref = acc * (s_a * s_w).view(1, -1, 1, 1).double()
    step = (s_a * s_w).view(1, -1, 1, 1)
    assert ((y.double() - ref).abs() <= step.double()).all()


def test_int8_learned_scale_gets_gradient():
    q = Int8Quantizer(per_channel=False, learned=True)
    x = torch.randn(100, requires_grad=True)
    q(x).pow(2).sum().backward()
    assert q.scale_param.grad is not None and q.scale_param.grad.abs() > 0
    assert x.grad is not None


def test_approxsign_gradient_is_analytic():
    x = torch.linspace(-1.5, 1.5, 301, requires_grad=True)
    sign(x, "approx").sum().backward()
    expect = torch.where(x.abs() < 1, 2 - 2 * x.abs(), torch.zeros_like(x)).detach()
    torch.testing.assert_close(x.grad, expect)
    # forward is the binary sign, with sign(0) = +1
    assert set(sign(x, "approx").tolist()) == {-1.0, 1.0}


def test_ste_gradient_is_clipped_identity():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    sign(x, "ste").sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("dims,shape", [(1, (6, 1, 1, 1)), (2, (6, 4, 1, 1)), (4, (6, 4, 3, 3))])
def test_alpha_shapes(dims, shape):
    q = BinaryWeightQuantizer((6, 4, 3, 3), alpha_dims=dims)
    assert tuple(q.alpha.shape) == shape and tuple(q.beta.shape) == (6, 1, 1, 1)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    q(w).sum().backward()
    assert q.alpha.grad.shape == q.alpha.shape and w.grad is not None
    with pytest.raises(ValueError, match="alpha_dims"):
        BinaryWeightQuantizer((6, 4, 3, 3), alpha_dims=3)


def test_downsample_kernel_switch():
    for k in (1, 3):
        m = backbones.build("binealnet", downsample_kernel=k)
        ds = [mod.downsample[0] for mod in m.modules() if isinstance(mod, backbones.BasicBlock) and mod.downsample]
        assert len(ds) == 3 and all(c.kernel_size == (k, k) for c in ds)


def test_clipped_prelu_slope_stays_nonnegative():
    q = BinaryActivationQuantizer(3, clip_slope=True)
    opt = torch.optim.SGD(q.parameters(), lr=10.0)
    x = -torch.rand(4, 3, 5, 5) - 0.1  # negative inputs: d out/d slope = x < 0
    q(x).sum().backward()  # with approx sign the gradient on the slope is negative*... push it down:
    q.slope.grad = torch.full_like(q.slope, 1.0)  # an optimizer step that makes the slope negative
    opt.step()
    assert (q.slope < 0).all()
    y = q.unit(x)
    assert (q.slope >= 0).all()  # clamped in place before use
    pre = F.prelu(x + q.b0.view(1, -1, 1, 1), torch.zeros(3)) + q.b1.view(1, -1, 1, 1)
    assert torch.equal(y, _pm1(pre))
    q2 = BinaryActivationQuantizer(3, clip_slope=False)
    q2.slope.data.fill_(-0.5)
    q2.unit(x)
    assert (q2.slope == -0.5).all()


def test_scales_after_leaves_conv_inputs_exactly_pm1(monkeypatch):
    seen = []
    real = F.conv2d

    def spy(a, w, *args):
        if a.shape[0] == 2:  # the batch-2 convs; batch-1 calls are the padding border terms
            seen.append((a.detach().clone(), w.detach().clone()))
        return real(a, w, *args)

    def run(scales_after):
        seen.clear()
        m = backbones.build("binealnet", stem="cifar", scales_after=scales_after, width=0.25)
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, BinaryActivationQuantizer):
                    mod.gamma.fill_(0.3)
        m(torch.randn(2, 3, 16, 16))
        return seen[1:]  # monkeypatching layers.F patches torch.nn.functional: the float stem comes first

    monkeypatch.setattr(layers.F, "conv2d", spy)
    after = run(True)
    assert len(after) == 8 * 2 + 3  # every binary conv of the four stages
    for a, w in after:
        assert set(a.unique().tolist()) == {-1.0, 1.0} and set(w.unique().tolist()) == {-1.0, 1.0}
    before = run(False)
    for a, w in before:  # scales before the conv: +-1 inputs, weights +-beta*gamma
        assert set(a.unique().tolist()) == {-1.0, 1.0} and not set(w.unique().tolist()) <= {-1.0, 1.0}


def test_scales_after_is_numerically_the_same_function():
    torch.manual_seed(3)
    a = _binary_conv(scales_after=False)
    b = _binary_conv(scales_after=True)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        a.act_quantizer.gamma.fill_(0.5)
        b.act_quantizer.gamma.fill_(0.5)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def test_optim_wrapper_groups_quantizer_params():
    """tasks.common.optim_wrapper is the one place of the lr split and the no-decay groups: the
    optimizer mmengine builds from it gives the quantizers' parameters lr * aux_lr_mult and no decay."""
    from mmengine.optim import build_optim_wrapper

    from tasks import common
    m = backbones.build("binealnet", variant="binary-ds3-clip-lr0.1", width=0.25)
    cfg = common.optim_wrapper("cpu", dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=5e-4), m.aux_lr_mult)
    opt = build_optim_wrapper(m, cfg).optimizer
    names = {id(p): n for n, p in m.named_parameters()}
    aux = {"alpha", "beta", "b0", "b1", "slope", "gamma"}
    seen = 0
    for g in opt.param_groups:
        for p in g["params"]:
            n = names[id(p)]
            seen += 1
            if n.split(".")[-1] in aux:
                assert g["lr"] == pytest.approx(0.01) and g["weight_decay"] == 0, n
            elif p.dim() == 1:  # norms
                assert g["lr"] == pytest.approx(0.1) and g["weight_decay"] == 0, n
            else:  # conv weights (latent weights of the binary convs included)
                assert g["lr"] == pytest.approx(0.1) and g["weight_decay"] == pytest.approx(5e-4), n
    assert seen == len(list(m.parameters()))


@pytest.mark.parametrize("name,width", [("binealnet", 1.5), ("int8", 1.0), ("fp32", 1.0)])
def test_presets_stage_shapes(name, width):
    m = backbones.build(name)
    assert m.width == width
    outs = m(torch.randn(2, 3, 64, 64))
    base = int(64 * width)
    assert [tuple(o.shape) for o in outs] == [(2, base * 2 ** i, 16 // 2 ** i, 16 // 2 ** i) for i in range(4)]
    assert m.out_channels == tuple(base * 2 ** i for i in range(4))
    # the stem conv stays full precision; every stage conv has the preset's precision
    assert type(m.stem[0]) is nn.Conv2d
    bits = {(c.weight_quantizer.bits, c.act_quantizer.bits) for c in m.modules() if isinstance(c, layers.QConv2d)}
    assert bits == {{"binealnet": (1, 1), "int8": (8, 8), "fp32": (32, 32)}[name]}


@pytest.mark.parametrize("precision,bits", [("binary-weights", (1, 32)), ("binary-activations", (32, 1))])
def test_partial_precisions(precision, bits):
    m = backbones.build("binealnet", precision=precision, width=0.25, stem="cifar")
    got = {(c.weight_quantizer.bits, c.act_quantizer.bits) for c in m.modules() if isinstance(c, layers.QConv2d)}
    assert got == {bits}
    m(torch.randn(1, 3, 16, 16)).__len__()


def test_out_indices_frozen_stages_norm_eval():
    m = backbones.build("fp32", out_indices=(1, 3), frozen_stages=1, norm_eval=True, depth=34)
    outs = m(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]
    m.train()
    assert not any(p.requires_grad for p in m.stem.parameters())
    assert not any(p.requires_grad for p in m.stages[0].parameters())
    assert all(p.requires_grad for p in m.stages[1].parameters())
    assert all(not bn.training for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))
    assert len(m.stages[2]) == 6  # ResNet-34 layout


def test_cifar_and_imagenet_stems():
    assert backbones.build("fp32", stem="cifar")(torch.randn(1, 3, 32, 32))[0].shape[-1] == 32
    assert backbones.build("fp32", stem="imagenet")(torch.randn(2, 3, 32, 32))[0].shape[-1] == 8


def test_bad_names_are_clear():
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        backbones.build("resnet")
    with pytest.raises(ValueError, match="unknown precision"):
        backbones.build("binealnet", precision="int4")
    with pytest.raises(ValueError, match="estimator"):
        sign(torch.zeros(1), "nope")


def test_float_quantizer_is_identity():
    x = torch.randn(5)
    assert FloatQuantizer()(x) is x and FloatQuantizer.bits == 32


def test_init_from_checkpoint_reports_mismatch(tmp_path):
    src = backbones.build("binealnet", width=0.25)
    torch.save({"state_dict": {"backbone." + k: v for k, v in src.state_dict().items()}}, tmp_path / "c.pth")
    init = dict(type="Pretrained", checkpoint=str(tmp_path / "c.pth"), prefix="backbone.")
    dst = backbones.build("binealnet", width=0.25, init_cfg=init)
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    wide = backbones.build("binealnet", width=0.5, init_cfg=init)
    with pytest.warns(UserWarning, match="shape mismatches"):
        wide.init_weights()


def test_building_a_backbone_draws_one_value_from_the_global_stream():
    """Whatever its preset and width, a backbone takes one draw of the global RNG (its layers use a
    stream seeded by it), so what is built after it starts from the same state; its own init still
    follows the seed."""
    after, first = [], {}
    for name, width in (("fp32", 1.0), ("int8", 1.0), ("binealnet", 1.0), ("binealnet", 2.0)):
        torch.manual_seed(5)
        bb = backbones.build(name, width=width)
        after.append(torch.rand(3))
        first.setdefault(name, bb.stem[0].weight.detach().clone())
    torch.manual_seed(5)
    torch.randint(2**62, (1,))
    expected = torch.rand(3)
    assert all(torch.equal(a, expected) for a in after)
    torch.manual_seed(5)
    assert torch.equal(backbones.build("fp32").stem[0].weight, first["fp32"])  # same seed, same backbone
    torch.manual_seed(6)
    assert not torch.equal(backbones.build("fp32").stem[0].weight, first["fp32"])
