"""Production inference engines for an exported ONNX model (onnx_export.py): OpenVINO and ONNX Runtime,
each pinned to a thread count, called like the torch deployed models (NCHW float tensor in, tensor
or tuple of tensors out). Both are optional: ``available_engines()`` says which import here."""
from __future__ import annotations

import importlib.util

import numpy as np
import torch

from .model import DeployError

ENGINES = ("openvino", "onnxruntime")
INSTALL_HINT = "pip install 'binealbench[deploy]' (or pip install onnx onnxruntime openvino)"


def runtime_precisions(model: "EngineModel") -> dict:
    """OpenVINO only: {(layer type, precision, primitive): count} of the compiled graph, e.g. to show that
    every conv runs as an INT8 AMX / VNNI primitive; {} for ONNX Runtime."""
    if model.engine != "openvino":
        return {}
    counts = {}
    for op in model.compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        key = " ".join(rt[k].astype(str) for k in ("layerType", "runtimePrecision", "primitiveType") if k in rt)
        if key.startswith("Convolution"):
            counts[key] = counts.get(key, 0) + 1
    return counts


def available_engines() -> list[str]:
    return [e for e in ENGINES if importlib.util.find_spec(e) is not None]


def engine_version(name: str) -> str:
    if name == "openvino":
        import openvino
        return openvino.__version__.split("-")[0]
    import onnxruntime
    return onnxruntime.__version__


class EngineModel:
    """An ONNX file on one engine, ``threads`` intra-op threads, latency-oriented (batch 1)."""

    def __init__(self, engine: str, onnx_path, threads: int = 1):
        if engine not in ENGINES:
            raise DeployError(f"unknown engine {engine!r}; choose from {ENGINES}")
        if importlib.util.find_spec(engine) is None:
            raise DeployError(f"engine {engine} is not installed: {INSTALL_HINT}")
        self.engine, self.threads, self.path = engine, threads, str(onnx_path)
        if engine == "onnxruntime":
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
        else:
            import openvino as ov
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(self.path), "CPU", {
                "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                # on AMX / AVX-512-BF16 CPUs OpenVINO runs float parts in bf16 unless told: keep them fp32
                "INFERENCE_PRECISION_HINT": "f32"})
            self.request = self.compiled.create_infer_request()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.engine == "onnxruntime":
            return self.session.run(None, {self.input: x})
        res = self.request.infer({0: x})
        return [np.asarray(res[o]) for o in self.compiled.outputs]

    def __call__(self, x: torch.Tensor):
        outs = [torch.from_numpy(np.array(o)) for o in self.run(x.float().numpy())]
        return outs[0] if len(outs) == 1 else tuple(outs)
