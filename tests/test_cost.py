"""bench/cost.py against hand-computed oracles."""
import math

import pytest
import torch
import torch.nn as nn
import torchvision

import backbones
from backbones.layers import QConv2d
from backbones.quantizers import BinaryActivationQuantizer, BinaryWeightQuantizer, Int8Quantizer
from bench.cost import count_cost, format_table

# torchvision resnet18 at 1x3x224x224, by hand:
STEM = 112 * 112 * 64 * 3 * 7 * 7                                    # 118,013,952
DOWNSAMPLE = 28 * 28 * 128 * 64 + 14 * 14 * 256 * 128 + 7 * 7 * 512 * 256  # 3 x 6,422,528 (1x1 convs)
FC = 512 * 1000
STAGE3X3 = (4 * 56 * 56 * 64 * 64 * 9                                # layer1: 4 convs 64->64
            + 28 * 28 * 128 * 9 * (64 + 3 * 128)                     # layer2: 64->128 then 3 x 128->128
            + 14 * 14 * 256 * 9 * (128 + 3 * 256)
            + 7 * 7 * 512 * 9 * (256 + 3 * 512))
RESNET18_MACS = 1_814_073_344


def test_hand_sums_agree_with_the_published_figure():
    assert STEM + DOWNSAMPLE + FC + STAGE3X3 == RESNET18_MACS


def test_resnet18_fp32_macs():
    r = count_cost(torchvision.models.resnet18(weights=None), torch.zeros(1, 3, 224, 224)).to_dict()
    assert r["macs"] == RESNET18_MACS
    assert r["macs_by_bits"] == {"32/32": RESNET18_MACS}
    assert r["bops"] == 0 and r["ops"] == RESNET18_MACS
    assert r["params"] == 11_689_512 and r["size_bits"] == 32 * 11_689_512


def _binarize_stage_3x3(model):
    """Swap every 3x3 conv in layer1..layer4 for a binary QConv2d (same shape); stem, 1x1 downsample, fc stay."""
    n = 0
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            for attr in ("conv1", "conv2"):
                c = getattr(block, attr)
                assert c.kernel_size == (3, 3)
                q = QConv2d(c.in_channels, c.out_channels, 3, stride=c.stride, padding=1, bias=False,
                            weight_quantizer=BinaryWeightQuantizer(tuple(c.weight.shape)),
                            act_quantizer=BinaryActivationQuantizer(c.in_channels))
                setattr(block, attr, q)
                n += 1
    assert n == 16
    return model


def test_resnet18_binary_stages_bops_ops():
    model = _binarize_stage_3x3(torchvision.models.resnet18(weights=None))
    r = count_cost(model, torch.zeros(1, 3, 224, 224)).to_dict()
    print(f"\nresnet18: MACs {r['macs']:,}  BOPs {r['bops']:.4e}  OPs {r['ops']:.4e}")
    assert r["macs"] == RESNET18_MACS
    assert r["macs_by_bits"] == {"32/32": STEM + DOWNSAMPLE + FC, "1/1": STAGE3X3}
    assert math.isclose(r["bops"], 1.6763e9, rel_tol=1e-3)
    assert math.isclose(r["ops"], 1.640e8, rel_tol=2e-3)
    assert r["bops"] == STAGE3X3 and r["ops"] == STEM + DOWNSAMPLE + FC + STAGE3X3 / 64


def test_depthwise_and_grouped_conv():
    x = torch.zeros(1, 8, 10, 10)
    dw = count_cost(nn.Conv2d(8, 8, 3, padding=1, groups=8), x)
    assert dw.macs == 8 * 10 * 10 * 1 * 3 * 3  # 7,200: each output sees one input channel
    grouped = count_cost(nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), x)
    assert grouped.macs == 16 * 5 * 5 * (8 // 2) * 3 * 3  # 14,400
    lin = count_cost(nn.Linear(20, 7), torch.zeros(3, 20))
    assert lin.macs == 3 * 7 * 20  # batch counted as given


def test_int8_layer_bops_and_ops():
    conv = QConv2d(4, 6, 3, padding=1, bias=False, weight_quantizer=Int8Quantizer(per_channel=True),
                   act_quantizer=Int8Quantizer(unsigned=True))
    r = count_cost(conv, torch.rand(1, 4, 5, 5)).to_dict()
    macs = 6 * 5 * 5 * 4 * 9
    assert r["macs"] == macs and r["macs_by_bits"] == {"8/8": macs}
    assert r["bops"] == 64 * macs and r["ops"] == macs


def test_mixed_precision_layer_is_float():
    conv = QConv2d(4, 6, 3, padding=1, bias=False, weight_quantizer=BinaryWeightQuantizer((6, 4, 3, 3)))
    r = count_cost(conv, torch.rand(1, 4, 5, 5)).to_dict()
    assert r["macs_by_bits"] == {"1/32": r["macs"]} and r["bops"] == 0 and r["ops"] == r["macs"]


def test_size_bits_of_binary_conv():
    conv = QConv2d(4, 8, 3, padding=1, bias=True, weight_quantizer=BinaryWeightQuantizer((8, 4, 3, 3)),
                   act_quantizer=BinaryActivationQuantizer(4))
    r = count_cost(conv, torch.rand(1, 4, 6, 6)).to_dict()
    weight = 8 * 4 * 3 * 3                       # 288 weights at 1 bit
    others = 8 + (8 + 8) + (4 + 4 + 4 + 1)      # bias; alpha, beta; b0, b1, slope, gamma at 32 bits
    assert r["params"] == weight + others
    assert r["size_bits"] == weight * 1 + others * 32
    assert r["layers"][0]["params"] == weight + others


def test_layer_called_twice_counts_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(self.conv(x))

    r = count_cost(Twice(), torch.zeros(1, 3, 4, 4)).to_dict()
    assert r["macs"] == 2 * (3 * 4 * 4 * 3)
    assert r["layers"][0]["calls"] == 2 and len(r["layers"]) == 1


def test_training_mode_restored_and_hooks_removed():
    model = backbones.build("binealnet", width=0.25, stem="cifar")
    model.train()
    model.stages[0].eval()  # mixed modes survive exactly
    before = {n: m.training for n, m in model.named_modules()}
    seen = []
    count_cost(model, torch.zeros(1, 3, 16, 16), forward=lambda m, x: (seen.append(m.training), m(x)))
    assert seen == [False]
    assert {n: m.training for n, m in model.named_modules()} == before
    assert all(not m._forward_hooks for m in model.modules())
    model.eval()
    count_cost(model, torch.zeros(1, 3, 16, 16))
    assert not any(m.training for m in model.modules())


def test_parts_of_a_detector_sum_to_total():
    class Det(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.neck = nn.Conv2d(8, 4, 1)
            self.bbox_head = nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x, mode="loss"):
            assert mode == "tensor"
            return self.bbox_head(self.neck(self.backbone(x)))

    det = Det()
    report = count_cost(det, torch.zeros(1, 3, 8, 8), forward=lambda m, x: m(x, mode="tensor"))
    r = report.to_dict()
    parts = r["parts"]
    assert set(parts) == {"backbone", "neck", "head"}
    assert parts["backbone"]["macs"] == 8 * 4 * 4 * 3 * 9
    assert parts["neck"]["macs"] == 4 * 4 * 4 * 8
    assert parts["head"]["macs"] == 2 * 4 * 4 * 4 * 9
    for key in ("macs", "bops", "ops", "params", "size_bits"):
        assert sum(p[key] for p in parts.values()) == r[key]
    assert parts["backbone"]["params"] == (8 * 27 + 8) + 2 * 8  # conv + BN affine
    table = format_table(report)
    for header in ("MACs (M)", "BOPs (G)", "OPs (M)", "params (M)", "size (MB)", "bbox_head", "neck"):
        assert header in table


def test_bare_backbone_and_plain_model_parts():
    r = count_cost(backbones.build("fp32", width=0.25, stem="cifar"), torch.zeros(1, 3, 8, 8)).to_dict()
    assert set(r["parts"]) == {"backbone"}
    r = count_cost(nn.Sequential(nn.Conv2d(3, 2, 1)), torch.zeros(1, 3, 8, 8)).to_dict()
    assert set(r["parts"]) == {"model"}


@pytest.mark.parametrize("stem,size", [("imagenet", 224), ("cifar", 32)])
def test_binealnet_ops_below_quarter_of_int8(stem, size):
    x = torch.zeros(1, 3, size, size)
    r = {name: count_cost(backbones.build(name, stem=stem), x).to_dict() for name in ("binealnet", "int8", "fp32")}
    print(f"\n{stem} {size}x{size}: " + "; ".join(
        f"{n} MACs {d['macs']:.4e} BOPs {d['bops']:.4e} OPs {d['ops']:.4e} size {d['size_bits'] / 8e6:.2f} MB"
        for n, d in r.items()))
    assert r["binealnet"]["ops"] < 0.25 * r["int8"]["ops"]
    # int8: every stage conv is 8/8, so its OPs equal its MACs, the same MACs as fp32
    assert r["int8"]["macs"] == r["fp32"]["macs"] == r["int8"]["ops"] == r["fp32"]["ops"]
    assert set(r["binealnet"]["macs_by_bits"]) == {"32/32", "1/1"}


def test_transposed_conv_by_hand():
    # CenterNet's neck upsamples with deconvs: each input element meets Cout/groups * kh * kw weights
    m = nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, bias=False)
    d = count_cost(m, torch.zeros(1, 6, 5, 7)).to_dict()
    assert d["macs"] == 6 * 5 * 7 * 4 * 4 * 4 and d["macs_by_bits"] == {"32/32": d["macs"]}
    g = nn.ConvTranspose2d(6, 4, 3, groups=2, bias=False)
    assert count_cost(g, torch.zeros(1, 6, 5, 5)).macs == 6 * 5 * 5 * 2 * 3 * 3
