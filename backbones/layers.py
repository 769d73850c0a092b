"""Quantized layers: a Conv2d (the backbone's one layer class) and a ConvTranspose2d (the detection
neck's upsampling) whose weight and input pass through quantizers."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .quantizers import FloatQuantizer, Quantizer, make_act_quantizer, make_weight_quantizer


class QConv2d(nn.Conv2d):
    """``nn.Conv2d`` (every argument forwarded) with ``weight_quantizer`` and ``act_quantizer``.

    Binary activations are padded with -1 (a true binary value), never 0. The conv itself
    zero-pads and adds the border's share, ``conv(pad(0, -1), W)`` computed at batch 1: the
    convolution is linear in its input, so the sum is exactly ``conv(pad(a, -1), W)`` without
    copying every activation into a padded tensor.

    Scales of binary activations (gamma, a scalar) and weights (beta, per output channel) are
    one factor per output channel. By default (scales before the conv) it enters the conv through
    its weight operand, ``conv(+-1, sign(W) * beta * gamma)``: the same product as
    ``conv(sign(x) * gamma, sign(W) * beta)``, with the scalar multiplied into the (usually much
    smaller) weight tensor. ``scales_after=True`` (the seed variant) convolves the +-1 units
    only and multiplies the output by beta * gamma.
    """

    #: set by backbones.checkpoint.load_backbone_weights: the learned scales came from a checkpoint
    scales_from_checkpoint = False
    #: reuse the eval-mode border term across calls (off only to measure what it saves: bench.speed)
    cache_border = True
    #: how binary inputs get their -1 pad: "border" (zero-pad conv + the ring's share, no copy of the
    #: input) or "explicit" (F.pad(a, value=-1), conv without padding: one copy, but torch.compile
    #: fuses it into the sign kernel and saves the ring conv and its weight gradient). Same output;
    #: `python -m bench.speed --pad-mode both` times the two.
    pad_mode = "border"

    def __init__(self, *args, weight_quantizer: Quantizer | None = None, act_quantizer: Quantizer | None = None,
                 scales_after: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("QConv2d supports numeric zero-mode padding only (it pads with the quantizer's value)")
        self.weight_quantizer = weight_quantizer or FloatQuantizer()
        self.act_quantizer = act_quantizer or FloatQuantizer()
        if scales_after and not all(hasattr(q, "unit") for q in (self.weight_quantizer, self.act_quantizer)):
            raise ValueError("scales_after needs binary weight and activation quantizers (they have unit/scale)")
        self.scales_after = scales_after
        self._border_cache = None  # (key, border) in eval mode: the ring term depends on shape and weights only
        self.reset_quantizer_scales()

    def reset_quantizer_scales(self):
        """Data-dependent quantizer init from the current weight (binary beta = mean |W|)."""
        if hasattr(self.weight_quantizer, "reset_scale"):
            self.weight_quantizer.reset_scale(self.weight)

    def _conv(self, a, w):
        return F.conv2d(a, w, None, self.stride, self.padding, self.dilation, self.groups)

    def _border(self, a, w, pad_unit):
        """conv(pad(zeros, pad_unit), W) at batch 1: what the pad ring adds to a zero-padded conv.
        In eval mode without autograd it is computed once per input shape and weight state, so
        inference does the conv work once (training recomputes it: the weights move every step)."""
        ph, pw = _pair(self.padding)
        if pad_unit == 0 or (ph == 0 and pw == 0):
            return 0.0
        cache = self.cache_border and not self.training and not torch.is_grad_enabled()
        if cache:
            key = (tuple(a.shape[1:]), a.dtype, a.device, tuple((id(p), p._version) for p in self.parameters()))
            if self._border_cache is not None and self._border_cache[0] == key:
                return self._border_cache[1]
        ring = F.pad(a.new_zeros((1,) + a.shape[1:]), (pw, pw, ph, ph), value=float(pad_unit))
        border = F.conv2d(ring, w, None, self.stride, 0, self.dilation, self.groups)
        self._border_cache = (key, border) if cache else None
        return border

    def train(self, mode=True):
        self._border_cache = None
        return super().train(mode)

    def forward(self, x):
        wq, aq = self.weight_quantizer, self.act_quantizer
        if not hasattr(aq, "unit"):  # float / INT8 inputs: zero padding, as nn.Conv2d
            y = self._conv(aq(x), wq(self.weight))
        else:
            a = aq.unit(x)  # exactly +-1
            if hasattr(wq, "unit") and wq.bits == 1:
                w, scale = wq.unit(self.weight), wq.scale.view(-1) * aq.scale
            else:  # float or INT8 weights with binary activations: gamma is the only scale
                w, scale = wq(self.weight), aq.scale
            if not self.scales_after:
                w = w * (scale.view(-1, 1, 1, 1) if scale.dim() else scale)
            ph, pw = _pair(self.padding)
            if self.pad_mode == "explicit" and aq.pad_unit != 0 and (ph or pw):
                y = F.conv2d(F.pad(a, (pw, pw, ph, ph), value=float(aq.pad_unit)), w, None, self.stride, 0,
                             self.dilation, self.groups)
            else:
                y = self._conv(a, w) + self._border(a, w, aq.pad_unit)
            if self.scales_after:
                y = y * scale.view(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self):
        return (super().extra_repr() + f", w_bits={self.weight_quantizer.bits}, a_bits={self.act_quantizer.bits}"
                + (", scales_after=True" if self.scales_after else ""))


class QConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with weight and input quantizers (the neck's upsampling deconvs).
    The weight is (in, out, kh, kw); it is quantized as (out, in, kh, kw) so per-output-channel
    scales line up. A transposed conv inserts zeros itself, so there is no padding value to choose."""

    scales_from_checkpoint = False  # as QConv2d's

    def __init__(self, *args, weight_quantizer=None, act_quantizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.groups != 1:
            raise ValueError("QConvTranspose2d supports groups=1 only")
        self.weight_quantizer = weight_quantizer or FloatQuantizer()
        self.act_quantizer = act_quantizer or FloatQuantizer()

    def reset_quantizer_scales(self):
        """binary beta = mean |W| per output channel (the weight is (in, out, kh, kw))."""
        if hasattr(self.weight_quantizer, "reset_scale"):
            self.weight_quantizer.reset_scale(self.weight.transpose(0, 1))

    def forward(self, x, output_size=None):
        w = self.weight_quantizer(self.weight.transpose(0, 1)).transpose(0, 1)
        return F.conv_transpose2d(self.act_quantizer(x), w, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


def qconv(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
          w="fp32", a="fp32", a_unsigned=False, alpha_dims=1, **kwargs) -> QConv2d:
    """A ``QConv2d`` from precision names: ``w`` and ``a`` each 'binary', 'int8' or 'fp32'
    (OpenMMLab's ``conv_cfg=dict(type='QConv', w='binary', a='binary')`` builds this)."""
    k = _pair(kernel_size)
    wq = make_weight_quantizer(w, (out_channels, in_channels // groups, *k), alpha_dims)
    aq = make_act_quantizer(a, in_channels, unsigned=a_unsigned)
    return QConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                   groups=groups, bias=bias, weight_quantizer=wq, act_quantizer=aq, **kwargs)


def qdeconv(in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
            dilation=1, w="fp32", a="fp32", alpha_dims=1, **kwargs) -> QConvTranspose2d:
    """A ``QConvTranspose2d`` from precision names (OpenMMLab ``type='QDeconv'``)."""
    k = _pair(kernel_size)
    wq = make_weight_quantizer(w, (out_channels, in_channels, *k), alpha_dims)
    m = QConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         output_padding=output_padding, groups=groups, bias=bias, dilation=dilation,
                         weight_quantizer=wq, act_quantizer=make_act_quantizer(a, in_channels), **kwargs)
    m.reset_quantizer_scales()
    return m


def quantized_copy(conv: nn.Conv2d | nn.ConvTranspose2d, w: str, a: str) -> QConv2d | QConvTranspose2d:
    """The quantized counterpart of a float ``conv`` or deconv: same shape, arguments and weights, at
    precisions ``w`` and ``a``, its binary scales set from the copied weights. For the convs a stock
    neck or head builds outside ``conv_cfg``."""
    args = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None, w=w, a=a)
    if isinstance(conv, nn.ConvTranspose2d):
        new = qdeconv(conv.in_channels, conv.out_channels, conv.kernel_size, output_padding=conv.output_padding,
                      **args)
    else:
        new = qconv(conv.in_channels, conv.out_channels, conv.kernel_size, **args)
    new.load_state_dict(conv.state_dict(), strict=False)
    new.reset_quantizer_scales()
    return new


def reset_quantizer_scales(model: nn.Module) -> int:
    """Data-dependent quantizer init (binary beta = mean|W|) of every quantized layer in ``model``
    from its current weights; call after anything that re-initialises weights. Layers whose scales
    were loaded from a checkpoint (``scales_from_checkpoint``) keep them. Returns the count."""
    n = 0
    for m in model.modules():
        if isinstance(m, (QConv2d, QConvTranspose2d)) and not m.scales_from_checkpoint:
            m.reset_quantizer_scales()
            n += 1
    return n
