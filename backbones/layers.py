"""The one quantized layer: a Conv2d whose weight and input pass through quantizers."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .quantizers import FloatQuantizer, Quantizer


class QConv2d(nn.Conv2d):
    """``nn.Conv2d`` (every argument forwarded) with ``weight_quantizer`` and ``act_quantizer``.

    Padding is done explicitly with the activation quantizer's pad value, so a binary input is
    padded with -1 (a true binary value) rather than 0. ``scales_after=True`` (binary
    quantizers only) convolves the +-1 units and multiplies the output by beta * gamma afterwards.
    """

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
        self.reset_quantizer_scales()

    def reset_quantizer_scales(self):
        """Data-dependent quantizer init from the current weight (binary beta = mean |W|)."""
        if hasattr(self.weight_quantizer, "reset_scale"):
            self.weight_quantizer.reset_scale(self.weight)

    def _pad(self, x, unit_value):
        ph, pw = _pair(self.padding)
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw, pw, ph, ph), value=float(unit_value))

    def forward(self, x):
        wq, aq = self.weight_quantizer, self.act_quantizer
        if self.scales_after:
            w, a = wq.unit(self.weight), self._pad(aq.unit(x), aq.pad_unit)
            y = F.conv2d(a, w, None, self.stride, 0, self.dilation, self.groups)
            y = y * (wq.scale.view(1, -1, 1, 1) * aq.scale)
        else:
            # binary: pad the +-1 units with -1, then scale; others: pad the value with 0
            a = self._pad(aq.unit(x), aq.pad_unit) * aq.scale if hasattr(aq, "unit") else self._pad(aq(x), 0.0)
            y = F.conv2d(a, wq(self.weight), None, self.stride, 0, self.dilation, self.groups)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self):
        return (super().extra_repr() + f", w_bits={self.weight_quantizer.bits}, a_bits={self.act_quantizer.bits}"
                + (", scales_after=True" if self.scales_after else ""))
