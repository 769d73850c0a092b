"""The deployed graph: BiNealNet's stem and BasicBlocks on real kernels (see the package docstring)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import BiNealNet
from ..errors import BenchError
from ..layers import QConv2d
from ..precision import KINDS, uniform_kind
from ..quantizers import BinaryActivationQuantizer, BinaryWeightQuantizer, FloatQuantizer, Int8Quantizer
from . import _ext

FORMAT = "binealbench-deploy/1"


class DeployError(BenchError):
    """A model the deployed kernels cannot run (which variant, and why), or an unusable export path."""


# ---------------------------------------------------------------- helpers
def _fold_bn(bn: nn.BatchNorm2d):
    """(k, c) with bn(y) = y * k + c per channel (eval statistics)."""
    k = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return k.float(), (bn.bias.detach() - bn.running_mean * k).float()


def _act_scale(q: Int8Quantizer) -> float:
    if not bool(q.observed):
        raise DeployError("an INT8 activation quantizer was never observed (an untrained model): no scale to deploy")
    s = q.scale_param.detach().abs() if q.scale_param is not None else q.running_absmax / q.qmax
    return float(s.clamp(min=1e-8))


def unsupported_reason(backbone: BiNealNet) -> str | None:
    """Why the deployed kernels cannot run this backbone (None when they can)."""
    if uniform_kind(backbone.precision) is None:
        return (f"precision {backbone.precision!r} (binary weights with float activations or the reverse) has no "
                f"deployed kernel; supported: {sorted(KINDS)}")
    for name, m in backbone.named_modules():
        if isinstance(m, QConv2d):
            if m.groups != 1 or m.kernel_size[0] != m.kernel_size[1] or m.stride[0] != m.stride[1] \
                    or m.dilation[0] != m.dilation[1] or m.padding[0] != m.padding[1]:
                return f"{name}: only square, groups=1 convs are deployed"
            wq, aq = m.weight_quantizer, m.act_quantizer
            if isinstance(wq, BinaryWeightQuantizer) and not wq._active:
                return f"{name}: binary weights switched off (stage 1 of two-stage training): not a binary model yet"
            if isinstance(aq, Int8Quantizer) and not aq.unsigned:
                return f"{name}: signed INT8 activations are not deployed (the backbone's are unsigned, after ReLU)"
    return None


#: the stem conv's precision at deployment: 'auto' is bf16 for the binary backbone where the CPU computes bf16
#: natively (AVX512-BF16 / AMX-BF16: oneDNN runs the 7x7 stem ~5x faster than in fp32), else fp32. The stem is
#: full precision in training; bf16 is a deployment rounding (8-bit mantissa) of its input, weights and output.
STEM_PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16; AMX-BF16 CPUs have it too)."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check())


def stem_precision(stem: str, kind: str) -> str:
    """'fp32' or 'bf16': what a ``stem`` choice means for a backbone of ``kind`` on this CPU."""
    if stem not in STEM_PRECISIONS:
        raise DeployError(f"stem precision must be one of {STEM_PRECISIONS}, not {stem!r}")
    if stem == "auto":
        return "bf16" if kind == "binary" and native_bf16() else "fp32"
    return stem


# ---------------------------------------------------------------- convs
def word_bits(path="auto") -> int:
    """32 on the AVX-512 VPOPCNTDQ and AVX2 paths: C = 96 fills 3 words where 64-bit words carry 32 bits of
    padding, and the sums stay in 32-bit lanes (docs/2026-12-05-binary-kernel-intel.md); 64 on the scalar path."""
    return 64 if _ext.load().cpu_path(path) == "scalar" else 32


def dword_weights(wp, C, taps):
    """Packed 64-bit weights (O, taps * ceil(C/64)) as 32-bit words (O, taps * ceil(C/32)): each tap's words
    split in halves (low half first: x86 is little-endian) and the all-padding last half dropped."""
    O, Cw, Cd = wp.size(0), (C + 63) // 64, (C + 31) // 32
    return wp.view(torch.int32).reshape(O, taps, 2 * Cw)[:, :, :Cd].reshape(O, taps * Cd).contiguous()


class BinConv:
    """Packed 1-bit conv: sign(PReLU(x + b0) + b1) packed with the -1 ring, XOR/popcount, then
    dot * scale[o] + bias[o] (+ residual), all NHWC."""

    def __init__(self, wp, C, k, stride, padding, dilation, b0, slope, b1, scale, bias):
        self.wp, self.C, self.k, self.stride, self.padding, self.dilation = wp, C, k, stride, padding, dilation
        self.b0, self.slope, self.b1, self.scale, self.bias = b0, slope, b1, scale, bias
        self.wb = _ext.load().block_weight(wp)  # the tiles' layout, made once (the file keeps wp)
        self._wb32 = None  # the same in 32-bit words, made on the first call that runs them

    @classmethod
    def from_qconv(cls, conv: QConv2d, bn: nn.BatchNorm2d):
        wq, aq = conv.weight_quantizer, conv.act_quantizer
        with torch.no_grad():
            unit = wq.unit(conv.weight).float()  # exactly +-1
            slope = aq.slope.detach().clamp(min=0) if aq.clip_slope else aq.slope.detach()
            s = (wq.scale.detach().reshape(-1) * aq.scale.detach()).float()
        k, c = _fold_bn(bn)
        ops = _ext.load()
        wp = ops.pack_weight(unit.permute(0, 2, 3, 1).contiguous())
        return cls(wp, conv.in_channels, conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0],
                   aq.b0.detach().float().contiguous(), slope.float().contiguous(), aq.b1.detach().float().contiguous(),
                   (s * k).contiguous(), c.contiguous())

    def __call__(self, x, residual=None, path="auto"):
        return self.conv(self.pack(x, path), residual, path)

    def pack(self, x, path="auto"):
        """The quantized activations, packed with the -1 ring in the word size this path runs."""
        return _ext.load().pack_act(x, self.b0, self.slope, self.b1, self.padding, self.padding, path, word_bits(path))

    def conv(self, xp, residual=None, path="auto"):
        ops = _ext.load()
        if xp.dtype == torch.int32 and self._wb32 is None:
            self._wb32 = ops.block_weight(dword_weights(self.wp, self.C, self.k * self.k))
        empty = xp.new_empty(0, dtype=torch.float32)
        return ops.binary_conv(xp, self.wb if xp.dtype == torch.int64 else self._wb32, self.C, self.k, self.k,
                               self.stride, self.dilation, self.scale, self.bias,
                               empty if residual is None else residual, path, self.wp.size(0))

    def state(self):
        return dict(type="bin", wp=self.wp, C=self.C, k=self.k, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, b0=self.b0, slope=self.slope, b1=self.b1, scale=self.scale, bias=self.bias)


class FloatConv:
    """Float conv with BN folded (fp32 stages and every model's stem), NCHW. ``precision`` 'bf16': inputs
    and weights rounded to bf16 and run by oneDNN (AMX / AVX512-BF16 where the CPU has them), the output
    left in bf16 (the stem's only; see ``STEM_PRECISIONS``)."""

    def __init__(self, weight, bias, stride, padding, dilation, precision="fp32"):
        self.weight, self.bias, self.stride, self.padding, self.dilation = weight, bias, stride, padding, dilation
        self.precision = precision
        # channels_last: oneDNN's NHWC kernels are the fast ones for the 3-channel 7x7 stem
        if precision == "bf16":
            self._w = weight.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            self._b = bias.to(torch.bfloat16)
        elif precision == "fp32":
            self._w, self._b = weight.contiguous(memory_format=torch.channels_last), bias
        else:
            raise DeployError(f"float conv precision must be fp32 or bf16, not {precision!r}")

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d, precision="fp32"):
        k, c = _fold_bn(bn)
        w = conv.weight.detach().float() * k.view(-1, 1, 1, 1)
        b = c + (conv.bias.detach().float() * k if conv.bias is not None else 0)
        return cls(w.contiguous(), b.contiguous(), conv.stride[0], conv.padding[0], conv.dilation[0], precision)

    def __call__(self, x):
        x = x.to(torch.bfloat16) if self.precision == "bf16" else x
        return F.conv2d(x.contiguous(memory_format=torch.channels_last), self._w, self._b, self.stride, self.padding,
                        self.dilation)

    def state(self):
        return dict(type="float", weight=self.weight, bias=self.bias, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, precision=self.precision)


class Int8Conv:
    """Real INT8 conv (torch.ops.quantized, x86): quint8 input at the trained scale ``in_scale``,
    per-channel int8 weights (the fake-quant integers; BN's factor folded into their scales),
    output quint8 at ``out_scale``/``out_zp``, ReLU fused when ``relu``."""

    def __init__(self, qw, w_scale, bias, stride, padding, dilation, in_scale, out_scale, out_zp, relu):
        self.qw, self.w_scale, self.bias = qw, w_scale, bias
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.in_scale, self.out_scale, self.out_zp, self.relu = in_scale, out_scale, out_zp, relu
        with warnings.catch_warnings():  # torch 2.14 marks quantized tensors deprecated; they are the x86 kernels' input
            warnings.simplefilter("ignore", UserWarning)
            w = torch._make_per_channel_quantized_tensor(qw, w_scale.double(),
                                                         torch.zeros_like(w_scale, dtype=torch.long), 0)
        self.packed = torch.ops.quantized.conv2d_prepack(w, bias, [stride] * 2, [padding] * 2, [dilation] * 2, 1)

    @classmethod
    def from_qconv(cls, conv: QConv2d, bn: nn.BatchNorm2d, out_scale, out_zp, relu):
        wq, aq = conv.weight_quantizer, conv.act_quantizer
        with torch.no_grad():
            s = wq.scale(conv.weight).float()  # per output channel, as the fake-quant forward
            q = torch.round(wq(conv.weight).float() / s.view(-1, 1, 1, 1)).clamp(-127, 127)
        k, c = _fold_bn(bn)
        q = q * torch.sign(k).view(-1, 1, 1, 1)  # a negative BN factor flips the integers; scales stay > 0
        return cls(q.to(torch.int8).contiguous(), (s * k.abs()).clamp(min=1e-12).contiguous(), c.contiguous(),
                   conv.stride[0], conv.padding[0], conv.dilation[0], _act_scale(aq), float(out_scale), int(out_zp),
                   relu)

    def quantize(self, x):
        return torch.quantize_per_tensor(x, self.in_scale, 0, torch.quint8)

    def __call__(self, xq):
        op = torch.ops.quantized.conv2d_relu if self.relu else torch.ops.quantized.conv2d
        return op(xq, self.packed, self.out_scale, self.out_zp)

    def state(self):
        return dict(type="int8", qw=self.qw, w_scale=self.w_scale, bias=self.bias, stride=self.stride,
                    padding=self.padding, dilation=self.dilation, in_scale=self.in_scale, out_scale=self.out_scale,
                    out_zp=self.out_zp, relu=self.relu)


def _conv_from_state(d):
    d = dict(d)
    t = d.pop("type")
    return {"bin": BinConv, "float": FloatConv, "int8": Int8Conv}[t](**d)


# ---------------------------------------------------------------- the backbone
class DeployedBackbone(nn.Module):
    """BiNealNet on deployed kernels; ``forward(x NCHW)`` returns the ``out_indices`` stage outputs
    (NCHW, as BiNealNet). Not trainable; convs are plain objects, their tensors live in ``state()``."""

    def __init__(self, kind, stem, maxpool, stem_relu, blocks, stage_ends, out_indices, double_shortcut,
                 path="auto"):
        super().__init__()
        self.kind, self.stem, self.maxpool, self.stem_relu = kind, stem, maxpool, stem_relu
        self.blocks, self.stage_ends, self.out_indices = blocks, list(stage_ends), tuple(out_indices)
        self.double_shortcut, self.path = double_shortcut, path

    # one BasicBlock, per kind
    def _block_binary(self, b, x):  # NHWC float in and out; Bi-Real residuals in the conv epilogue
        identity = x if b["ds"] is None else b["ds"](x, path=self.path)
        if self.double_shortcut:
            out = b["conv1"](x, identity, path=self.path)
            return b["conv2"](out, out, path=self.path)
        return b["conv2"](b["conv1"](x, path=self.path), identity, path=self.path)

    def _block_int8(self, b, x):  # float NCHW (channels_last) in and out
        out = b["conv2"](b["conv1"](b["conv1"].quantize(x))).dequantize()  # conv1 writes at conv2's input scale
        identity = x if b["ds"] is None else b["ds"](b["ds"].quantize(x)).dequantize()
        return F.relu(out + identity)

    def _block_fp32(self, b, x):
        out = b["conv2"](F.relu(b["conv1"](x)))
        identity = x if b["ds"] is None else b["ds"](x)
        return F.relu(out + identity)

    def stem_pool(self, y):
        """Binary backbone: the stem conv's output (NCHW view of NHWC memory, float or bf16) max-pooled (and
        ReLU'd) in one pass by the kernels, as NHWC float (a bf16 widens exactly; float stays bit-exact)."""
        k, s, p = (3, 2, 1) if self.maxpool else (1, 1, 0)
        return _ext.load().max_pool(y.permute(0, 2, 3, 1).contiguous(), k, s, p, self.stem_relu, self.path)

    @torch.no_grad()
    def forward(self, x):
        # channels_last from the input on: the stem conv then writes NHWC, which the max-pool reads fastest
        x = self.stem(x.float().contiguous(memory_format=torch.channels_last))
        if self.kind == "binary":
            x, block, to_nchw = self.stem_pool(x), self._block_binary, lambda t: t.permute(0, 3, 1, 2)
        else:
            x = x.float()
            if self.maxpool:  # before the ReLU (they commute: max of ReLUs = ReLU of the max), on 4x fewer values
                x = F.max_pool2d(x, 3, 2, 1)
            if self.stem_relu:
                x = F.relu(x)
            x, to_nchw = x.contiguous(memory_format=torch.channels_last), lambda t: t
            block = self._block_int8 if self.kind == "int8" else self._block_fp32
        outs, i = [], 0
        for stage, end in enumerate(self.stage_ends):
            for b in self.blocks[i:end]:
                x = block(b, x)
            i = end
            if stage in self.out_indices:
                outs.append(to_nchw(x))
        return tuple(outs)

    def state(self):
        blocks = [{k: (v.state() if v is not None else None) for k, v in b.items()} for b in self.blocks]
        return dict(kind=self.kind, stem=self.stem.state(), maxpool=self.maxpool, stem_relu=self.stem_relu,
                    blocks=blocks, stage_ends=self.stage_ends, out_indices=list(self.out_indices),
                    double_shortcut=self.double_shortcut)

    @classmethod
    def from_state(cls, d, path="auto"):
        if d["kind"] == "binary":
            _ext.load()  # the packed kernels (a clear KernelUnavailable when they cannot be built)
        blocks = [{k: (_conv_from_state(v) if v is not None else None) for k, v in b.items()} for b in d["blocks"]]
        return cls(d["kind"], _conv_from_state(d["stem"]), d["maxpool"], d["stem_relu"], blocks, d["stage_ends"],
                   d["out_indices"], d["double_shortcut"], path)


@torch.no_grad()
def _residual_ranges(backbone: BiNealNet, calib: torch.Tensor) -> dict:
    """max |.| of each BasicBlock's bn2 output and downsample output on ``calib`` (fake-quant model,
    eval mode): the INT8 requantization ranges of the convs whose outputs meet a residual."""
    ranges, hooks = {}, []
    for m in backbone.modules():
        for sub in ([m.bn2] + ([m.downsample] if m.downsample is not None else [])) if hasattr(m, "bn2") else []:
            hooks.append(sub.register_forward_hook(
                lambda mod, inp, out: ranges.__setitem__(mod, max(ranges.get(mod, 0.0), float(out.abs().max())))))
    was = backbone.training
    backbone.eval()
    try:
        backbone(calib)
    finally:
        backbone.train(was)
        for h in hooks:
            h.remove()
    return ranges


def _int8_out(rng: float):
    """quint8 output scale/zero point covering [-rng, rng]."""
    return max(rng, 1e-6) / 127.5, 128


def deploy_backbone(backbone: BiNealNet, calib: torch.Tensor | None = None, path: str = "auto",
                    stem: str = "fp32") -> DeployedBackbone:
    """The deployed counterpart of a trained ``backbone`` (``calib``: a batch of model inputs, needed for INT8;
    ``stem``: the stem conv's precision, one of ``STEM_PRECISIONS``)."""
    why = unsupported_reason(backbone)
    if why:
        raise DeployError(f"cannot deploy this BiNealNet: {why}")
    kind = uniform_kind(backbone.precision)
    stem_conv, stem_bn = backbone.stem[0], backbone.stem[1]
    stem = FloatConv.from_conv(stem_conv, stem_bn, stem_precision(stem, kind))
    maxpool = any(isinstance(m, nn.MaxPool2d) for m in backbone.stem)
    stem_relu = any(isinstance(m, nn.ReLU) for m in backbone.stem)
    if kind == "int8":
        if calib is None:
            raise DeployError("INT8 deployment needs calibration inputs (calib) for the residual requantization")
        # before any forward: an eval call would observe a never-trained quantizer on the calibration batch
        unobserved = [n for n, m in backbone.named_modules() if isinstance(m, Int8Quantizer) and not m.per_channel
                      and not bool(m.observed)]
        if unobserved:
            raise DeployError(f"INT8 activation quantizers never observed ({len(unobserved)}, first {unobserved[0]}): "
                              "the checkpoint was never trained or calibrated, so it has no scales to deploy")
        ranges = _residual_ranges(backbone, calib)
    blocks, ends = [], []
    for stage in backbone.stages:
        for blk in stage:
            ds = blk.downsample
            if kind == "binary":
                b = dict(conv1=BinConv.from_qconv(blk.conv1, blk.bn1), conv2=BinConv.from_qconv(blk.conv2, blk.bn2),
                         ds=BinConv.from_qconv(ds[0], ds[1]) if ds is not None else None)
            elif kind == "int8":
                s2 = _act_scale(blk.conv2.act_quantizer)
                b = dict(conv1=Int8Conv.from_qconv(blk.conv1, blk.bn1, s2, 0, relu=True),
                         conv2=Int8Conv.from_qconv(blk.conv2, blk.bn2, *_int8_out(ranges[blk.bn2]), relu=False),
                         ds=Int8Conv.from_qconv(ds[0], ds[1], *_int8_out(ranges[ds]), relu=False)
                         if ds is not None else None)
            else:
                b = dict(conv1=FloatConv.from_conv(blk.conv1, blk.bn1), conv2=FloatConv.from_conv(blk.conv2, blk.bn2),
                         ds=FloatConv.from_conv(ds[0], ds[1]) if ds is not None else None)
            blocks.append(b)
        ends.append(len(blocks))
    dsc = bool(backbone.stages[0][0].double_shortcut)
    if kind != "binary" and dsc:
        raise DeployError("double_shortcut with float/INT8 activations is not deployed (only the binary model uses it)")
    return DeployedBackbone(kind, stem, maxpool, stem_relu, blocks, ends, backbone.out_indices, dsc, path)


# ---------------------------------------------------------------- classifier (backbone + pool + linear head)
class DeployedClassifier(nn.Module):
    """Normalisation + deployed backbone + global pool + float linear head (as trained)."""

    def __init__(self, backbone: DeployedBackbone, head_w, head_b, mean, std):
        super().__init__()
        self.backbone, self.head_w, self.head_b, self.mean, self.std = backbone, head_w, head_b, mean, std

    def stem_pool(self, y):
        """Binary backbone: the stem conv's output (NCHW view of NHWC memory, float or bf16) max-pooled (and
        ReLU'd) in one pass by the kernels, as NHWC float (a bf16 widens exactly; float stays bit-exact)."""
        k, s, p = (3, 2, 1) if self.maxpool else (1, 1, 0)
        return _ext.load().max_pool(y.permute(0, 2, 3, 1).contiguous(), k, s, p, self.stem_relu, self.path)

    @torch.no_grad()
    def forward(self, x):
        """x: N x 3 x H x W pixels (0..255, uint8 or float) -> logits."""
        x = (x.float() - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return F.linear(self.backbone(x)[-1].mean(dim=(2, 3)), self.head_w, self.head_b)

    def state(self):
        return dict(format=FORMAT, model="classifier", backbone=self.backbone.state(), head_w=self.head_w,
                    head_b=self.head_b, mean=self.mean, std=self.std)


def deploy(model, calib=None, path="auto", mean=None, std=None, stem="fp32"):
    """Deploy a ``BiNealNet`` or a classifier with ``.backbone`` and a linear ``.head`` (mean/std:
    the pixel normalisation of its data preprocessor; ``stem``: see ``deploy_backbone``)."""
    if isinstance(model, BiNealNet):
        return deploy_backbone(model, calib, path, stem)
    bb = deploy_backbone(model.backbone, calib, path, stem)
    mean = torch.as_tensor(mean if mean is not None else model.data_preprocessor.mean).float().reshape(-1)
    std = torch.as_tensor(std if std is not None else model.data_preprocessor.std).float().reshape(-1)
    return DeployedClassifier(bb, model.head.weight.detach().float().clone(), model.head.bias.detach().float().clone(),
                              mean, std)


def save(deployed, path, meta=None) -> int:
    """Write ``deployed`` as one file of plain tensors (torch.load(..., weights_only=True)); returns its bytes."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"{path.parent} is not writable")
        state = deployed.state() if isinstance(deployed, DeployedClassifier) else \
            dict(format=FORMAT, model="backbone", backbone=deployed.state())
        torch.save(dict(state, meta=meta or {}), path)
    except OSError as e:
        raise DeployError(f"cannot write the exported model to {path} ({e.__class__.__name__}: {e})") from None
    return path.stat().st_size


def load(path, kernel_path="auto"):
    """A saved deployed model (a DeployedClassifier or DeployedBackbone), ready to run."""
    d = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise DeployError(f"{path}: not a {FORMAT} file")
    bb = DeployedBackbone.from_state(d["backbone"], kernel_path)
    if d["model"] == "backbone":
        return bb
    return DeployedClassifier(bb, d["head_w"], d["head_b"], d["mean"], d["std"])
