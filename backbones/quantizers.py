"""Quantizers: modules that map a float tensor to its quantized value and say how many bits it has.

One abstraction for every precision (larq / bitorch style). A quantizer is an ``nn.Module`` with
``bits`` and ``forward(x) -> quantized x`` (same shape, float dtype, gradient via an estimator).
The binary ones also split into ``unit(x)`` (exactly +-1) times ``scale`` so a layer can apply
the scale after the convolution (a seed variant) and pad with the true binary value (-1).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from .precision import KINDS


# ---------------------------------------------------------------- sign with gradient estimators
def _binary_sign(x: torch.Tensor) -> torch.Tensor:
    """+1 / -1 and nothing else (torch.sign(0) is 0): 1 with the sign bit of x, one pass over
    memory; +0 gives +1 (and -0.0, which only arises from negating an exact zero, gives -1)."""
    return torch.copysign(x.new_ones(()), x)


class _Sign(torch.autograd.Function):
    """Binary sign forward; subclasses give the backward (the gradient estimator)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _binary_sign(x)


class _SignSTE(_Sign):
    """Straight-through estimator, clipped: d/dx = 1 for |x| <= 1, else 0 (BNN / XNOR)."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where(x.abs() <= 1, grad, 0.0)


class _SignApprox(_Sign):
    """Bi-Real Net ApproxSign: the derivative of the piecewise quadratic
    F(x) = -1 (x<-1); 2x+x^2 (-1<=x<0); 2x-x^2 (0<=x<1); 1 (x>=1), i.e. 2 - 2|x| on |x| < 1."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (2 - 2 * x.abs()).clamp_(min=0)


class _SignIdentitySTE(torch.autograd.Function):
    """STE without the clip, for inputs already inside [-1, 1] (tanh outputs), where the clipped
    STE's mask is all ones: same gradient, one full-size op and no saved tensor per weight."""

    @staticmethod
    def forward(ctx, x):
        return _binary_sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


SIGN_ESTIMATORS = {"ste": _SignSTE.apply, "approx": _SignApprox.apply}


def sign(x: torch.Tensor, estimator: str = "ste") -> torch.Tensor:
    """Binary sign (+-1) whose backward is the named estimator ('ste' or 'approx')."""
    try:
        return SIGN_ESTIMATORS[estimator](x)
    except KeyError:
        raise ValueError(f"unknown sign estimator {estimator!r}; expected one of {sorted(SIGN_ESTIMATORS)}") from None


# ---------------------------------------------------------------- the abstraction
class Quantizer(nn.Module):
    """Maps a tensor to its quantized value. ``bits`` is what the cost counter reads."""

    bits: int = 32
    #: value a layer pads this quantizer's output with (quantized domain, before any scale)
    pad_unit: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class FloatQuantizer(Quantizer):
    """Identity: full precision (32 bits)."""

    bits = 32

    def forward(self, x):
        return x


class Int8Quantizer(Quantizer):
    """Symmetric INT8 fake quantization (zero point 0).

    ``per_channel=True`` (weights): one scale per output channel, ``max|W| / 127``, observed on the
    current weights each call. ``per_channel=False`` (activations): one scale per tensor.
    ``learned=True`` learns the scale LSQ-style (``torch._fake_quantize_learnable_*``), starting
    from the first observed value; otherwise activations use a running max (EMA, momentum 0.1).
    ``unsigned=True`` quantizes to [0, 255] (inputs known to be >= 0, e.g. after ReLU).
    Forward and backward are PyTorch's ``fake_quantize_*`` kernels (STE inside the range).
    """

    bits = 8

    def __init__(self, per_channel: bool = False, learned: bool = False, unsigned: bool = False,
                 channel_axis: int = 0, momentum: float = 0.1):
        super().__init__()
        self.per_channel, self.learned, self.unsigned = per_channel, learned, unsigned
        self.channel_axis, self.momentum = channel_axis, momentum
        self.qmin, self.qmax = (0, 255) if unsigned else (-127, 127)
        # 0 = not yet observed; learned scales become a Parameter at first use
        self.register_buffer("running_absmax", torch.zeros(()), persistent=True)
        self.scale_param = nn.Parameter(torch.zeros(())) if learned and not per_channel else None
        # saved with the model, so a resumed LSQ run keeps its learned scale instead of re-observing it
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool), persistent=True)
        self._observed = False  # python copy of `observed`: no device sync on the training path

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "observed"
        if key not in state_dict:  # checkpoints written before the flag was saved
            absmax = state_dict.get(prefix + "running_absmax")
            state_dict[key] = torch.tensor(bool(absmax is not None and absmax > 0))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._observed = bool(self.observed)

    def _absmax(self, x):
        if self.per_channel:
            dims = [d for d in range(x.dim()) if d != self.channel_axis]
            return x.detach().abs().amax(dim=dims)
        return x.detach().abs().max()

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The step size that ``forward`` uses for ``x`` (a tensor; per channel when per_channel)."""
        if self.per_channel:
            return (self._absmax(x) / self.qmax).clamp(min=1e-8)
        if not self.training and not self._observed:
            self._observed = bool(self.observed)
        if not self.training and not self._observed:
            # eval before any training-mode pass would use the 1e-8 floor as the scale and output ~0:
            # calibrate on this first batch instead, and say so
            warnings.warn("Int8Quantizer: activation scale never observed in training; calibrated on the first "
                          "eval batch (run training-mode passes over calibration data for a proper scale)")
        if self.training or not self._observed:
            cur = self._absmax(x).to(self.running_absmax)
            # first observation (buffer still 0) takes the value, later ones are averaged; a
            # torch.where rather than `if buffer == 0` so there is no GPU sync and no graph break
            r = self.running_absmax
            r.copy_(torch.where(r > 0, r.lerp(cur, self.momentum), cur))
            if self.scale_param is not None and not self._observed:  # LSQ starts from the observation
                self.scale_param.data.copy_((cur / self.qmax).clamp(min=1e-8))
            if not self._observed:
                self.observed.fill_(True)
                self._observed = True
        if self.scale_param is not None:
            return self.scale_param.abs().clamp(min=1e-8)
        return (self.running_absmax / self.qmax).clamp(min=1e-8)

    def forward(self, x):
        s = self.scale(x)
        if self.per_channel:
            zp = torch.zeros(s.shape, dtype=torch.int32, device=x.device)
            return torch.fake_quantize_per_channel_affine(x, s.float(), zp, self.channel_axis, self.qmin, self.qmax)
        if self.scale_param is not None:
            # LSQ: gradient flows to the scale; grad_factor 1/sqrt(numel * qmax) as in the paper
            grad_factor = 1.0 / (x.numel() * self.qmax) ** 0.5
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, s.reshape(1).float(), torch.zeros(1, device=x.device), self.qmin, self.qmax, grad_factor)
        return torch.fake_quantize_per_tensor_affine(x, s.float(), torch.zeros((), dtype=torch.int32, device=x.device),
                                                     self.qmin, self.qmax)


ALPHA_SHAPES = {1: "per output channel", 2: "per (out, in) pair", 4: "per weight element"}


class BinaryWeightQuantizer(Quantizer):
    """Wb = Sign(Tanh(alpha * W)) * beta. alpha is 1-D (out), 2-D (out, in) or 4-D (every element);
    beta is per output channel, set to mean|W| (the XNOR scale) by ``reset_scale``. Both are learned."""

    pad_unit = 0.0  # weights are never padded

    def __init__(self, weight_shape: tuple[int, ...], alpha_dims: int = 1, estimator: str = "ste"):
        super().__init__()
        if alpha_dims not in ALPHA_SHAPES:
            raise ValueError(f"alpha_dims must be one of {sorted(ALPHA_SHAPES)} ({ALPHA_SHAPES}); got {alpha_dims}")
        out, inp = weight_shape[0], weight_shape[1]
        rest = (1,) * (len(weight_shape) - 2)
        shape = {1: (out, 1) + rest, 2: (out, inp) + rest, 4: tuple(weight_shape)}[alpha_dims]
        self.alpha = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.ones((out,) + (1,) * (len(weight_shape) - 1)))
        self.estimator = estimator
        # off = the latent float weights pass through (stage 1 of two-stage training); saved, so a
        # resumed run is in its stage; a python copy avoids a device sync at every forward
        self.register_buffer("active", torch.ones((), dtype=torch.bool), persistent=True)
        self._active = True

    @property
    def bits(self):
        return 1 if self._active else 32

    def set_active(self, on: bool):
        self.active.fill_(on)
        self._active = bool(on)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        state_dict.setdefault(prefix + "active", torch.ones((), dtype=torch.bool))  # older checkpoints
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._active = bool(self.active)

    @torch.no_grad()
    def reset_scale(self, w):
        """beta = mean |W| per output channel (the XNOR scale); layers call this after weight init."""
        self.beta.copy_(w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True).clamp(min=1e-8))

    def unit(self, w):
        t = torch.tanh(self.alpha * w)
        return _SignIdentitySTE.apply(t) if self.estimator == "ste" else sign(t, self.estimator)

    @property
    def scale(self):
        return self.beta

    def forward(self, w):
        return self.unit(w) * self.scale if self._active else w


class BinaryActivationQuantizer(Quantizer):
    """Ab = Sign(Htanh(PReLU(x + b0) + b1)) * gamma. b0, b1 and the PReLU slope are per channel,
    gamma a scalar. ``clip_slope`` keeps the slope >= 0 (the seed's best variant): it is clamped
    in place at every forward, so an optimizer step that pushes it negative is undone before use
    and the gradient can still bring it back up. Pad value: -1 (binary), never 0."""

    bits = 1
    pad_unit = -1.0

    def __init__(self, channels: int, estimator: str = "approx", clip_slope: bool = True,
                 slope_init: float = 0.25):
        super().__init__()
        self.b0 = nn.Parameter(torch.zeros(channels))
        self.b1 = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), slope_init))
        self.gamma = nn.Parameter(torch.ones(()))
        self.estimator, self.clip_slope = estimator, clip_slope

    def unit(self, x):
        slope = self.slope
        if self.clip_slope:
            if self.training:
                with torch.no_grad():
                    self.slope.clamp_(min=0)
            else:  # out of place: inference leaves the parameters (and their versions) untouched
                slope = slope.clamp(min=0)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = F.prelu(x + self.b0.view(shape), slope) + self.b1.view(shape)
        # sign(Htanh(y)) == sign(y), and both estimators are already 0 where |y| > 1, so Htanh's
        # gradient mask is implied: skipping the op changes neither forward nor backward
        return sign(y, self.estimator)

    @property
    def scale(self):
        return self.gamma

    def forward(self, x):
        return self.unit(x) * self.scale


def make_weight_quantizer(kind: str, weight_shape: tuple, alpha_dims: int = 1, estimator: str = "ste") -> Quantizer:
    """The weight quantizer of a conv of ``weight_shape`` (out, in, kh, kw) at precision ``kind``."""
    if kind == "binary":
        return BinaryWeightQuantizer(weight_shape, alpha_dims, estimator)
    if kind == "int8":
        return Int8Quantizer(per_channel=True)
    if kind == "fp32":
        return FloatQuantizer()
    raise ValueError(f"unknown weight precision {kind!r}; expected one of {KINDS}")


def make_act_quantizer(kind: str, channels: int, estimator: str = "approx", clip_slope: bool = True,
                       int8_learned: bool = False, unsigned: bool = False) -> Quantizer:
    """The input quantizer of a conv with ``channels`` input channels at precision ``kind``
    (``unsigned``: INT8 inputs known to be >= 0, e.g. after a ReLU)."""
    if kind == "binary":
        return BinaryActivationQuantizer(channels, estimator, clip_slope)
    if kind == "int8":
        return Int8Quantizer(per_channel=False, learned=int8_learned, unsigned=unsigned)
    if kind == "fp32":
        return FloatQuantizer()
    raise ValueError(f"unknown activation precision {kind!r}; expected one of {KINDS}")

