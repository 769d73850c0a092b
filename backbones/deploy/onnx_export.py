"""A deployed INT8 (or fp32) BiNealNet as an ONNX graph for production engines (OpenVINO, ONNX Runtime).

INT8 is written as a QDQ graph (QuantizeLinear -> DequantizeLinear around every conv), the format
both engines turn into integer kernels. The scales are the trained model's own:

* conv weights: the fake-quant integers and per-output-channel scales (BN folded in), int8, zero point 0;
* conv inputs: each conv's trained per-tensor activation scale, uint8, zero point 0 (the trained
  quantizer is unsigned, after a ReLU); a conv followed by BN+ReLU writes straight at the next conv's
  input scale, so its ReLU is the uint8 clamp, as in the fake-quant model;
* conv biases: int32 at input scale x weight scale (what an integer kernel adds);
* residual adds, quantized as a production INT8 model quantizes them: the block's conv2 (and the
  downsample conv) output at the range observed on calibration images (int8, symmetric), the identity
  at the block's own conv1 input scale, the sum float, then ReLU;
* the stem conv (float in the trained model) post-training quantized: per-channel int8 weights
  (max |w| / 127) and its input at max |x| / 127 over the calibration images.

What stays float: the input normalisation, the ReLU after each residual add, global average pooling
and the classifier's linear head (as trained). So the graph differs from the fake-quant model in
two roundings: the stem's, and the identity's at conv1's scale.

``onnx`` builds the graph; no engine is needed to export.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .model import DeployedBackbone, DeployedClassifier, DeployError, FloatConv, Int8Conv

OPSET = 17


def _onnx():
    try:
        import onnx
        return onnx
    except ImportError:
        raise DeployError("exporting to ONNX needs the `onnx` package: pip install 'binealbench[deploy]' "
                          "(or pip install onnx onnxruntime openvino)") from None


class _Graph:
    """Nodes and initializers of one graph; Q/DQ pairs are shared per (tensor, scale)."""

    def __init__(self):
        self.onnx = _onnx()
        self.h, self.nodes, self.inits, self.n = self.onnx.helper, [], [], 0
        self.quantized = {}  # (float tensor name, scale, signed) -> its DQ output
        self.is_dq = {}  # DQ output name -> (scale, signed): already on that grid

    def name(self, stem):
        self.n += 1
        return f"{stem}_{self.n}"

    def const(self, arr, stem="c"):
        name = self.name(stem)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op, inputs, stem=None, **attrs):
        out = self.name(stem or op.lower())
        self.nodes.append(self.h.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def qdq(self, x, scale, signed):
        """x on the per-tensor int8 (signed) / uint8 grid of ``scale``: Q then DQ (shared; a no-op when
        ``x`` already is a DQ output on that grid)."""
        scale = float(np.float32(scale))
        if self.is_dq.get(x) == (scale, signed):
            return x
        key = (x, scale, signed)
        if key not in self.quantized:
            s = self.const(np.array(scale, np.float32), "scale")
            zp = self.const(np.array(0, np.int8 if signed else np.uint8), "zp")
            q = self.node("QuantizeLinear", [x, s, zp], "q")
            dq = self.node("DequantizeLinear", [q, s, zp], "dq")
            self.quantized[key], self.is_dq[dq] = dq, (scale, signed)
        return self.quantized[key]

    def int8_conv(self, x, qw, w_scale, bias, in_scale, stride, padding, dilation):
        """Conv on DQ(int8 per-channel weights) with an int32 bias at in_scale * w_scale (x already a DQ output)."""
        w_scale = w_scale.double().numpy().astype(np.float32)
        w = self.node("DequantizeLinear", [self.const(qw.numpy().astype(np.int8), "w_q"),
                                           self.const(w_scale, "w_scale"),
                                           self.const(np.zeros(len(w_scale), np.int8), "w_zp")], "w", axis=0)
        b_scale = (np.float32(in_scale) * w_scale).astype(np.float32)
        bq = np.clip(np.round(bias.double().numpy() / b_scale), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
        b = self.node("DequantizeLinear", [self.const(bq, "b_q"), self.const(b_scale, "b_scale"),
                                           self.const(np.zeros(len(bq), np.int32), "b_zp")], "b", axis=0)
        return self._conv(x, w, b, qw.shape[-1], stride, padding, dilation)

    def float_conv(self, x, weight, bias, stride, padding, dilation):
        return self._conv(x, self.const(weight.numpy().astype(np.float32), "w"),
                          self.const(bias.numpy().astype(np.float32), "b"), weight.shape[-1], stride, padding, dilation)

    def _conv(self, x, w, b, k, stride, padding, dilation):
        return self.node("Conv", [x, w, b], "conv", kernel_shape=[k, k], strides=[stride] * 2, pads=[padding] * 4,
                         dilations=[dilation] * 2)


def _stem_int8(g, x, stem: FloatConv, calib_absmax, out_scale):
    """The float stem conv post-training quantized: input at calib_absmax/127 (int8), per-channel int8
    weights at max|w|/127, output straight at ``out_scale`` (uint8: the ReLU)."""
    in_scale = max(float(calib_absmax), 1e-8) / 127
    w_scale = (stem.weight.abs().amax(dim=(1, 2, 3)) / 127).clamp(min=1e-12)
    qw = torch.round(stem.weight / w_scale.view(-1, 1, 1, 1)).clamp(-127, 127).to(torch.int8)
    y = g.int8_conv(g.qdq(x, in_scale, True), qw, w_scale, stem.bias, in_scale, stem.stride, stem.padding,
                    stem.dilation)
    return g.qdq(y, out_scale, False)


def _backbone_graph(g, x, bb: DeployedBackbone, calib_absmax):
    """Graph nodes of ``bb`` from float input ``x``; returns the float names of its out_indices stages."""
    int8 = bb.kind == "int8"
    if int8:
        x = _stem_int8(g, x, bb.stem, calib_absmax, bb.blocks[0]["conv1"].in_scale)  # the uint8 clamp is the ReLU
    else:
        x = g.float_conv(x, bb.stem.weight, bb.stem.bias, bb.stem.stride, bb.stem.padding, bb.stem.dilation)
        if bb.stem_relu:
            x = g.node("Relu", [x])
    if bb.maxpool:
        x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    outs, i = [], 0
    for stage, end in enumerate(bb.stage_ends):
        for b in bb.blocks[i:end]:
            c1, c2, ds = b["conv1"], b["conv2"], b["ds"]
            if int8:
                xq = g.qdq(x, c1.in_scale, False)
                h = g.qdq(g.int8_conv(xq, c1.qw, c1.w_scale, c1.bias, c1.in_scale, c1.stride, c1.padding, c1.dilation),
                          c2.in_scale, False)  # conv1 + BN + ReLU written at conv2's input scale
                out = g.int8_conv(h, c2.qw, c2.w_scale, c2.bias, c2.in_scale, c2.stride, c2.padding, c2.dilation)
                out = g.qdq(out, c2.out_scale * 127.5 / 127, True)  # the calibrated residual range, symmetric int8
                if ds is None:
                    identity = xq
                else:
                    identity = g.int8_conv(g.qdq(x, ds.in_scale, False), ds.qw, ds.w_scale, ds.bias, ds.in_scale,
                                           ds.stride, ds.padding, ds.dilation)
                    identity = g.qdq(identity, ds.out_scale * 127.5 / 127, True)
            else:
                h = g.node("Relu", [g.float_conv(x, c1.weight, c1.bias, c1.stride, c1.padding, c1.dilation)])
                out = g.float_conv(h, c2.weight, c2.bias, c2.stride, c2.padding, c2.dilation)
                identity = x if ds is None else g.float_conv(x, ds.weight, ds.bias, ds.stride, ds.padding, ds.dilation)
            x = g.node("Relu", [g.node("Add", [out, identity])])
        i = end
        if stage in bb.out_indices:
            outs.append(x)
    return outs


def export_onnx(deployed, path, input_shape, calib: torch.Tensor | None = None) -> int:
    """Write ``deployed`` (a DeployedClassifier or DeployedBackbone of kind int8 or fp32) as ONNX to
    ``path``; ``input_shape`` is the NCHW input (batch dimension left dynamic). INT8 needs ``calib``:
    inputs as the model takes them (pixels for a classifier, normalised tensors for a backbone), for
    the stem's input scale. Returns the file's bytes."""
    onnx = _onnx()
    bb = deployed.backbone if isinstance(deployed, DeployedClassifier) else deployed
    if not isinstance(bb, DeployedBackbone) or bb.kind not in ("int8", "fp32"):
        raise DeployError(f"ONNX export covers deployed int8 and fp32 models; got {getattr(bb, 'kind', type(bb))}")
    if bb.double_shortcut:
        raise DeployError("double_shortcut blocks are not exported (only the binary model uses them)")
    int8 = bb.kind == "int8"
    if int8 and not all(isinstance(c, Int8Conv) for b in bb.blocks for c in b.values() if c is not None):
        raise DeployError("an int8 deployed model whose convs are not Int8Conv: cannot export")
    if int8 and calib is None:
        raise DeployError("INT8 export needs calibration inputs (calib) for the stem's input scale")
    g = _Graph()
    h = g.h
    x = "input"
    absmax = None
    if isinstance(deployed, DeployedClassifier):
        x = g.node("Div", [g.node("Sub", [x, g.const(deployed.mean.view(1, -1, 1, 1).numpy(), "mean")]),
                           g.const(deployed.std.view(1, -1, 1, 1).numpy(), "std")], "normalised")
        if int8:
            absmax = float(((calib.float() - deployed.mean.view(1, -1, 1, 1)) / deployed.std.view(1, -1, 1, 1))
                           .abs().max())
    elif int8:
        absmax = float(calib.float().abs().max())
    feats = _backbone_graph(g, x, bb, absmax)
    if isinstance(deployed, DeployedClassifier):
        pooled = g.node("Flatten", [g.node("GlobalAveragePool", [feats[-1]])], axis=1)
        outs = [g.node("Gemm", [pooled, g.const(deployed.head_w.numpy(), "head_w"),
                                g.const(deployed.head_b.numpy(), "head_b")], "logits", transB=1)]
    else:
        outs = feats
    n, c, hh, ww = input_shape
    inp = h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", c, hh, ww])
    out_info = []
    for k, o in enumerate(outs):
        new = "logits" if isinstance(deployed, DeployedClassifier) else f"stage{bb.out_indices[k]}"
        g.nodes.append(h.make_node("Identity", [o], [new], name=new + "_node"))
        shape = ["batch", deployed.head_w.shape[0]] if isinstance(deployed, DeployedClassifier) else \
            ["batch", f"c{k}", f"h{k}", f"w{k}"]
        out_info.append(h.make_tensor_value_info(new, onnx.TensorProto.FLOAT, shape))
    graph = h.make_graph(g.nodes, "binealbench_" + bb.kind, [inp], out_info, g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="binealbench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    except OSError as e:
        raise DeployError(f"cannot write the ONNX model to {path} ({e.__class__.__name__}: {e})") from None
    return path.stat().st_size
