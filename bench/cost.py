"""Inference cost of any ``nn.Module``: MACs per precision, BOPs, OPs, parameters, size at true bit-width.

Forward hooks on every convolution (``nn.Conv2d``, ``backbones.QConv2d``, ``nn.ConvTranspose2d``, ...) and ``nn.Linear``; the bit-widths
are read from the layer's ``weight_quantizer.bits`` / ``act_quantizer.bits`` (a layer without
quantizers is 32/32). Nothing else is counted: BatchNorm, activations, residual adds, pooling,
interpolation and the quantizers' own arithmetic cost nothing here.

Conventions (the same for every backbone and task):

* **MACs** of a conv = output elements x (in_channels / groups) x kh x kw (grouped and depthwise convs
  are right); of a linear layer = output elements x in_features. The batch is counted as given:
  every figure is the cost of one forward pass of ``example_input`` (use batch 1 for a
  per-image cost). A layer called more than once (shared heads, weight tying) counts every call.
* **BOPs** (bit operations) = MACs x w_bits x a_bits, summed over *low-bit* layers only, i.e. layers
  with max(w_bits, a_bits) < 16 (binary 1/1 -> 1 x MACs, INT8 8/8 -> 64 x MACs). A layer with either
  operand at 16 or 32 bits is a float layer: it has no BOPs.
* **OPs** = MACs of float layers + BOPs / 64 (a 32-bit MAC counts once, an 8/8 MAC once, a 1/1 MAC
  1/64; Bi-Real Net / ReActNet convention).
* **params** = number of parameters of the model (each shared tensor once).
* **size_bits** = every parameter at its true storage width: the ``weight`` of a conv / linear layer at
  its w_bits; everything else (biases, BatchNorm, the quantizers' own parameters such as alpha, beta,
  b0, b1, PReLU slope, gamma and learned scales) at 32 bits. Buffers (BN running stats) are not counted.
* **parts**: each layer and parameter belongs to the model's top-level child it lives in: ``backbone``
  -> backbone; ``neck`` -> neck; any child whose name ends in ``head`` (mmdet ``bbox_head``,
  ``rpn_head``, ``roi_head``; mmseg ``decode_head``, ``auxiliary_head``) -> head; anything else -> model.
  A bare ``BiNealNet`` is all backbone.

Counting runs under ``torch.no_grad`` with every module in eval mode; each module's training flag is
restored afterwards. (A fresh binary weight quantizer initialises its beta from the weights on its
first call, eval or not; that is the same value its first training step would set.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

PARTS = ("backbone", "neck", "head", "model")
LOW_BIT_LIMIT = 16  # a layer is low-bit (has BOPs) when max(w_bits, a_bits) < this


#: the layers that carry MACs: convolutions of any dimension, transposed ones (deconvs) included, and linear
COUNTED = (_ConvNd, nn.Linear)


def layer_bits(module: nn.Module) -> tuple[int, int]:
    """(w_bits, a_bits) of a conv / linear layer: from its quantizers, 32 where it has none."""
    wq, aq = getattr(module, "weight_quantizer", None), getattr(module, "act_quantizer", None)
    return int(getattr(wq, "bits", 32)), int(getattr(aq, "bits", 32))


def part_of(model: nn.Module, name: str) -> str:
    """The part (backbone / neck / head / model) of the module or parameter called ``name`` in ``model``."""
    from backbones import BiNealNet  # light: no OpenMMLab
    if isinstance(model, BiNealNet):
        return "backbone"
    top = name.split(".", 1)[0]
    if top == "backbone":
        return "backbone"
    if top in ("neck", "necks"):
        return "neck"
    if top.endswith("head"):
        return "head"
    return "model"


def _is_float(w_bits: int, a_bits: int) -> bool:
    return max(w_bits, a_bits) >= LOW_BIT_LIMIT


@dataclass
class LayerCost:
    """One conv / linear module; ``macs``/``bops``/``ops`` summed over its ``calls``; shapes of its first call."""

    name: str
    type: str
    part: str
    w_bits: int
    a_bits: int
    in_shape: tuple
    out_shape: tuple
    calls: int = 0
    macs: int = 0
    params: int = 0

    @property
    def bits(self) -> str:
        return f"{self.w_bits}/{self.a_bits}"

    @property
    def bops(self) -> int:
        return 0 if _is_float(self.w_bits, self.a_bits) else self.macs * self.w_bits * self.a_bits

    @property
    def ops(self) -> float:
        return float(self.macs) if _is_float(self.w_bits, self.a_bits) else self.bops / 64

    def to_dict(self) -> dict:
        return dict(name=self.name, type=self.type, part=self.part, w_bits=self.w_bits, a_bits=self.a_bits,
                    in_shape=list(self.in_shape), out_shape=list(self.out_shape), calls=self.calls,
                    macs=self.macs, bops=self.bops, ops=self.ops, params=self.params)


@dataclass
class CostReport:
    """The cost of one forward pass of ``input_shape``; see the module docstring for the conventions."""

    input_shape: tuple
    layers: list[LayerCost]
    params: int
    size_bits: int
    part_params: dict = field(default_factory=dict)
    part_size_bits: dict = field(default_factory=dict)

    def _totals(self, layers, params, size_bits) -> dict:
        by_bits: dict[str, int] = {}
        for l in layers:
            by_bits[l.bits] = by_bits.get(l.bits, 0) + l.macs
        return dict(macs=sum(l.macs for l in layers), bops=sum(l.bops for l in layers),
                    ops=sum(l.ops for l in layers), macs_by_bits=by_bits, params=params, size_bits=size_bits)

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.layers)

    @property
    def bops(self) -> int:
        return sum(l.bops for l in self.layers)

    @property
    def ops(self) -> float:
        return sum(l.ops for l in self.layers)

    @property
    def parts(self) -> dict:
        names = [p for p in PARTS if p in self.part_params or any(l.part == p for l in self.layers)]
        return {p: self._totals([l for l in self.layers if l.part == p], self.part_params.get(p, 0),
                                self.part_size_bits.get(p, 0)) for p in names}

    def to_dict(self) -> dict:
        """Plain numbers (MACs, BOPs, OPs, counts, bits); JSON-serialisable."""
        d = self._totals(self.layers, self.params, self.size_bits)
        d.update(input_shape=list(self.input_shape), layers=[l.to_dict() for l in self.layers], parts=self.parts)
        return d


def _shape(t) -> tuple:
    if isinstance(t, torch.Tensor):
        return tuple(t.shape)
    if isinstance(t, (tuple, list)) and t:
        return _shape(t[0])
    return ()


def count_cost(model: nn.Module, example_input, forward: Callable | None = None) -> CostReport:
    """Run ``model`` once on ``example_input`` and count its conv / linear cost.

    ``forward(model, x)`` replaces ``model(x)`` where a model needs another call (mmdet detectors:
    ``lambda m, x: m(x, mode='tensor')``). The cost is that of ``example_input`` as given (batch
    included; usually 1x3xHxW).
    """
    names = {m: n for n, m in model.named_modules()}
    rows: dict[nn.Module, LayerCost] = {}

    def hook(module, inputs, output):
        out = output if isinstance(output, torch.Tensor) else output[0]
        if isinstance(module, _ConvNd):
            k = math.prod(module.kernel_size)
            if module.transposed:  # every input element meets (out_channels / groups) * k weights
                x = inputs[0]
                macs = x.numel() * (module.out_channels // module.groups) * k
            else:
                macs = out.numel() * (module.in_channels // module.groups) * k
        else:
            macs = out.numel() * module.in_features
        row = rows.get(module)
        if row is None:
            name = names.get(module, type(module).__name__)
            w, a = layer_bits(module)
            row = rows[module] = LayerCost(name, type(module).__name__, part_of(model, name), w, a,
                                           _shape(inputs), tuple(out.shape),
                                           params=sum(p.numel() for p in module.parameters()))
        row.calls += 1
        row.macs += int(macs)

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COUNTED)]
    try:
        model.eval()
        with torch.no_grad():
            forward(model, example_input) if forward is not None else model(example_input)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode

    # parameters: each tensor once, weights of conv / linear at their w_bits, the rest at 32 bits
    weight_bits = {}
    for m in model.modules():
        if isinstance(m, COUNTED):
            weight_bits[id(m.weight)] = layer_bits(m)[0]
    params, size_bits = 0, 0
    part_params: dict[str, int] = {}
    part_size: dict[str, int] = {}
    for name, p in model.named_parameters():
        bits = p.numel() * weight_bits.get(id(p), 32)
        part = part_of(model, name)
        params += p.numel()
        size_bits += bits
        part_params[part] = part_params.get(part, 0) + p.numel()
        part_size[part] = part_size.get(part, 0) + bits
    return CostReport(_shape(example_input), list(rows.values()), params, size_bits, part_params, part_size)


def _fmt(x: float, scale: float, digits: int = 3) -> str:
    return f"{x / scale:.{digits}f}"


def format_table(report: CostReport) -> str:
    """Per-layer rows, then totals per part and overall; units in the column headers."""
    cols = ["layer", "type", "part", "W/A", "in shape", "out shape", "calls", "MACs (M)", "BOPs (G)", "OPs (M)",
            "params (K)"]
    lines = []
    for l in report.layers:
        lines.append([l.name, l.type, l.part, l.bits, "x".join(map(str, l.in_shape)), "x".join(map(str, l.out_shape)),
                      str(l.calls), _fmt(l.macs, 1e6), _fmt(l.bops, 1e9, 4), _fmt(l.ops, 1e6), _fmt(l.params, 1e3, 1)])
    widths = [max(len(c), *(len(r[i]) for r in lines)) if lines else len(c) for i, c in enumerate(cols)]
    right = set(range(6, len(cols)))

    def row(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"cost of one forward pass, input {'x'.join(map(str, report.input_shape))}", row(cols),
           "  ".join("-" * w for w in widths)]
    out += [row(r) for r in lines]

    d = report.to_dict()
    tcols = ["total", "MACs (M)", "BOPs (G)", "OPs (M)", "params (M)", "size (MB)", "MACs by W/A (M)"]
    trows = []
    for name, t in list(d["parts"].items()) + [("all", d)]:
        by = ", ".join(f"{k}: {_fmt(v, 1e6)}" for k, v in sorted(t["macs_by_bits"].items()))
        trows.append([name, _fmt(t["macs"], 1e6), _fmt(t["bops"], 1e9, 4), _fmt(t["ops"], 1e6),
                      _fmt(t["params"], 1e6), _fmt(t["size_bits"] / 8, 1e6), by])
    tw = [max(len(c), *(len(r[i]) for r in trows)) for i, c in enumerate(tcols)]

    def trow(cells):
        return "  ".join(c.ljust(w) if i in (0, len(tcols) - 1) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, tw)))

    out += ["", trow(tcols), "  ".join("-" * w for w in tw)] + [trow(r) for r in trows]
    return "\n".join(line.rstrip() for line in out)


__all__ = ["count_cost", "format_table", "CostReport", "LayerCost", "layer_bits", "part_of"]
