"""`bench deploy`: a run's checkpoint on real low-bit kernels (backbones/deploy), exported at its
true size, timed, and re-evaluated on the run's test set. Classification: the whole model.
Detection and segmentation: the backbone (neck and head stay as trained, fake-quant), timed alone.

    python -m bench.deploy CKPT [CKPT ...] [--export-dir DIR] [--results-dir results] [--repeats 30] [--batch 64]
    python -m bench.deploy --bench-224 [--repeats 10]     # benchmark only: backbones at 224x224, batch 1

Per checkpoint: one JSON record in <results-dir>/deploy/classification/ (one level below the task
records `bench report` reads, so it never mistakes them for its own) and the table <results-dir>/deploy.md
(rebuilt from every record there). Latency is the median of ``--repeats`` batch-1 calls at 1 and 2
threads; throughput is images/s at ``--batch`` on 2 threads (median of 5). The machine may be shared:
medians, and the load average at the start is recorded beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from backbones.deploy.model import STEM_PRECISIONS
from backbones.errors import BenchError
from backbones.precision import uniform_kind

from .records import RESULTS_DIR, atomic_write, check_writable, portable
from . import rundir
from .provenance import commit, versions

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- loading a run
def load_run(ckpt):
    """(bench_run.json args, mmengine config, the trained fake-quant model in eval mode) of a checkpoint."""
    ckpt = Path(ckpt)
    args = rundir.run_args(ckpt, "bench deploy")
    if args.get("task") != "classification":
        raise BenchError(f"{ckpt} is a {args.get('task')} run; bench deploy handles classification checkpoints "
                         f"whole and {', '.join(DENSE_TASKS)} backbones")
    return rundir.load_model(ckpt, "bench deploy")


def split_tensors(cfg, split):
    """(uint8 images, labels) of the run's train or test split, as its loaders read them."""
    from tasks.classification import load_split
    ds = cfg.test_dataloader.dataset if split == "test" else cfg.train_dataloader.dataset
    x, y, _ = load_split(ds.root, split, ds.per_class, ds.input_size)
    return x, y


def recorded_metric(ckpt, args, results_dir=None):
    """The metric the run's own record holds, and that record's path (looked up in ``results_dir`` if
    given, the results dir beside the work dir, then the repository's); (None, None) when there is none."""
    from .records import record_of_checkpoint
    f = record_of_checkpoint(ckpt, args, ([Path(results_dir)] if results_dir else []) +
                             [Path(ckpt).parent.parent / "results", RESULTS_DIR])
    if f is not None:
        return json.loads(f.read_text())["metric"]["value"], str(f)
    return None, None


def _run_of(ckpt, args, rec_file) -> str:
    """A deploy record's name: the run it deployed (its record's, else its bench_run.json's, else its work dir's)."""
    return Path(rec_file).stem if rec_file else args.get("run") or Path(ckpt).parent.name


# ---------------------------------------------------------------- measuring
def times_ms(fn, x, threads, repeats):
    """Wall ms of ``repeats`` calls ``fn(x)`` on ``threads`` torch threads (2 warm-up calls first), sorted.
    ``threads`` None: ``fn`` holds its own thread count (an ONNX engine)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(2):
                fn(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(x)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old)
    return sorted(times)


def median_ms(fn, x, threads, repeats):
    """Median wall ms of ``fn(x)`` on ``threads`` threads (2 warm-up calls first)."""
    return statistics.median(times_ms(fn, x, threads, repeats))


@torch.no_grad()
def predictions(fn, images, batch=200):
    return torch.cat([fn(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])


def _fake_quant_fn(model):
    pre = model.data_preprocessor
    return lambda x: model._logits_eager((x.float() - pre.mean) / pre.std)


def _machine():
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), None) \
        if Path("/proc/cpuinfo").is_file() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1min_at_start": load, "torch": torch.__version__}


def kernel_name(kind, stem="fp32"):
    """What runs the convs of a deployed ``kind`` on this machine (``stem``: its stem conv's resolved
    precision, named when not fp32), and a note when it is a fallback."""
    from backbones import deploy
    suffix = f"; stem conv {stem} (oneDNN)" if stem != "fp32" else ""
    if kind == "int8":
        return f"torch.ops.quantized ({torch.backends.quantized.engine}), per-channel int8 weights{suffix}", None
    if kind == "fp32":
        return f"torch fp32 conv (BN folded){suffix}", None
    ok, what = deploy.available()
    if not ok:
        return "fake-quant (fallback)", f"packed kernels unavailable: {what}; timed and evaluated as fake-quant"
    note = "this CPU has no AVX2: the scalar popcount path" if what == "scalar" else None
    return f"packed 1-bit XOR/popcount ({what}){suffix}", note


# ---------------------------------------------------------------- INT8 / FP32 on production engines
def engine_results(deployed, onnx_file, calib, x1, images=None, threads=(1, 2), repeats=30, torch_pred=None):
    """``deployed`` (int8 or fp32, torch) exported to ONNX (QDQ for int8, the trained scales) and run on
    every installed engine: batch-1 latency per thread count, and, given ``images``, the predictions'
    argmax (top-1 is computed by the caller) and their agreement with ``torch_pred``. {} when no
    engine is installed."""
    from backbones.deploy.engines import EngineModel, available_engines, engine_version, runtime_precisions
    from backbones.deploy.onnx_export import export_onnx
    names = available_engines()
    if not names:
        return {}
    size = export_onnx(deployed, onnx_file, tuple(x1.shape), calib)
    out = {"onnx_file": str(onnx_file), "onnx_bytes": size, "engines": {}}
    for name in names:
        row = {"version": engine_version(name), "latency_ms_batch1": {}, "latency_ms_batch1_min": {}}
        for t in threads:
            m = EngineModel(name, onnx_file, t)
            ts = times_ms(m, x1, None, repeats)
            row["latency_ms_batch1"][str(t)] = round(statistics.median(ts), 3)
            row["latency_ms_batch1_min"][str(t)] = round(ts[0], 3)
        if name == "openvino":
            row["conv_primitives"] = runtime_precisions(m)
        if images is not None:
            pred = predictions(m, images)
            row["pred"] = pred
            if torch_pred is not None:
                row["agreement_with_torch"] = float((pred == torch_pred).float().mean())
        out["engines"][name] = row
    return out


def fastest(rec):
    """(engine label, 1-thread ms) of the fastest engine a deploy record measured: torch's own kernels
    or an ONNX engine."""
    cands = [(rec["kernel"], rec["latency_ms_batch1"].get("1"))]
    for name, row in (rec.get("engines") or {}).get("engines", {}).items():
        cands.append((f"{name} {row['version']}", row["latency_ms_batch1"].get("1")))
    cands = [c for c in cands if c[1] is not None]
    return min(cands, key=lambda c: c[1]) if cands else (None, None)


# ---------------------------------------------------------------- dense tasks: the backbone on the kernels
#: tasks whose BiNealNet backbone is deployed (neck and head stay as trained, fake-quant).
#: The deployed features equal the fake-quant ones except at sign ties: a value at or within float
#: rounding of 0 before a binary activation may flip, since the two compute in different orders.
#: A trained model has few (CamVid short checkpoint: mIoU equal to 6 decimals); a freshly
#: initialised one has many exact zeros (conv sums of 0 through an identity BN), so there the
#: feature maps can differ although every conv agrees on the same input.
DENSE_TASKS = ("detection", "segmentation")


def _feature_check(engines: dict, x, deployed_bb) -> None:
    """Each engine's deepest feature map against the torch-deployed backbone's (relative RMS error): the
    dense heads are not run on the engines, so this is their accuracy check (INT8: the stem's and the
    identities' extra roundings, onnx_export.py)."""
    from backbones.deploy.engines import EngineModel
    if not engines:
        return
    with torch.no_grad():
        ref = deployed_bb(x)[-1].float()
    for name, row in engines["engines"].items():
        out = EngineModel(name, engines["onnx_file"], 1)(x)
        got = (out[-1] if isinstance(out, tuple) else out).float()
        row["rel_rms_feature_diff_vs_torch"] = float((got - ref).norm() / ref.norm().clamp_min(1e-12))


class _Contiguous(torch.nn.Module):
    """The deployed backbone's feature maps are NHWC in memory; mmdet / mmseg heads call .view on them."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return tuple(t.contiguous() for t in self.backbone(x))


def deploy_dense_checkpoint(ckpt, args, export_dir=None, results_dir=RESULTS_DIR, repeats=30, threads=(1, 2),
                            stem="fp32", records_dir=None):
    """A detection / segmentation checkpoint: its backbone on the deployed kernels, the neck and head
    as trained. The task's test set is evaluated twice in one Runner (fake-quant backbone, then the
    deployed one); the backbone is timed at the task's example input."""
    import backbones.openmmlab  # noqa: F401
    from backbones import deploy
    from mmengine.runner import Runner
    from tasks.common import unwrap

    from .runner import prepare_cfg

    task, cfg = rundir.rebuild_config(ckpt, args, work_dir=ckpt.parent / "deploy_eval")
    check_writable(Path(results_dir) / "deploy" / task.NAME)
    cfg.log_level = "WARNING"  # the runner's config dump and loop logs would bury the deploy's summary lines
    runner = Runner.from_cfg(prepare_cfg(cfg))
    rundir.load_into(runner, ckpt, "the model its bench_run.json describes")
    model = unwrap(runner.model).eval()
    fq_backbone = model.backbone
    why = deploy.unsupported_reason(fq_backbone)
    if why:
        raise BenchError(f"{ckpt}: backbone {args['backbone']} cannot be deployed: {why}")
    kind = uniform_kind(fq_backbone.precision)
    stem_prec = deploy.stem_precision(stem, kind)
    kernel, note = kernel_name(kind, stem_prec)
    # INT8 residual scales are observed on test inputs as the model sees them (after its preprocessor)
    loader = runner.build_dataloader(cfg.test_dataloader)
    calib = [model.data_preprocessor(b, False)["inputs"] for _, b in zip(range(8), loader)]
    calib = torch.cat([c for c in calib if c.shape[1:] == calib[0].shape[1:]]).float()
    key = task.METRIC["key"]
    metric_fq = float(runner.test()[key])
    if kernel.startswith("fake-quant"):
        deployed_bb, size, export_file = fq_backbone, None, None
    else:
        export_file = (Path(export_dir) if export_dir else ckpt.parent) / f"{ckpt.stem}_backbone_deployed.pt"
        size = deploy.save(deploy.deploy_backbone(fq_backbone, calib, stem=stem_prec), export_file,
                           meta=dict(checkpoint=str(ckpt), run=args, kernel=kernel))
        deployed_bb = deploy.load(export_file)  # what a user loads
    model.backbone = _Contiguous(deployed_bb)
    try:
        metric_dep = float(runner.test()[key])
    finally:
        model.backbone = fq_backbone
    x = calib[:1]
    with torch.no_grad():  # the deepest feature map, deployed vs fake-quant, relative to its scale
        a, b = deployed_bb(calib)[-1], fq_backbone(calib)[-1]
        feature_diff = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    lat = {t: median_ms(deployed_bb, x, t, repeats) for t in threads}
    lat_fq = {t: median_ms(fq_backbone, x, t, max(1, repeats // 3)) for t in threads}
    engines = {}
    if kind in ("int8", "fp32") and size:  # the backbone on OpenVINO / ONNX Runtime too (the fastest INT8 counts)
        engines = engine_results(deployed_bb, export_file.with_suffix(".onnx"), calib, x, None, threads, repeats)
        _feature_check(engines, calib[:4], deployed_bb)
    recorded, rec_file = recorded_metric(ckpt, args, records_dir or results_dir)
    rec = dict(
        task=task.NAME, backbone=args["backbone"], variant=args.get("variant"), kind=kind, timed="backbone",
        schedule=args["schedule"], checkpoint=str(ckpt), kernel=kernel + " (backbone; neck and head fake-quant)",
        note=note, stem=None if kernel.startswith("fake-quant") else stem_prec,
        export_file=str(export_file) if size else None, export_bytes=size,
        input_size=list(x.shape[1:]), latency_ms_batch1={str(t): round(v, 3) for t, v in lat.items()},
        fake_quant_latency_ms_batch1={str(t): round(v, 3) for t, v in lat_fq.items()}, repeats=repeats,
        metric_name=task.METRIC["name"], metric_deployed=metric_dep, metric_fake_quant=metric_fq,
        metric_recorded=recorded, record=rec_file, machine=_machine(),
        max_rel_feature_diff=feature_diff, engines=engines or None,
        timing_note="medians; see load_avg_1min_at_start for how busy the machine was", commit=commit(),
        versions=versions(), command=f"bench deploy {ckpt} --repeats {repeats} --stem {stem}")
    out = Path(results_dir) / "deploy" / task.NAME / f"{_run_of(ckpt, args, rec_file)}.json"
    atomic_write(out, json.dumps(portable(rec), indent=1, sort_keys=True) + "\n")
    write_table(results_dir)
    return rec


# ---------------------------------------------------------------- one checkpoint
def deploy_checkpoint(ckpt, export_dir=None, results_dir=RESULTS_DIR, repeats=30, batch=64, threads=(1, 2),
                      records_dir=None, stem="fp32") -> dict:
    """Deploy, export, time and evaluate one checkpoint (classification whole; detection and
    segmentation: the backbone); writes and returns its record."""
    from backbones import deploy

    ckpt = Path(ckpt)
    meta = rundir.run_args(ckpt, "bench deploy")
    if meta.get("task") in DENSE_TASKS:
        return deploy_dense_checkpoint(ckpt, meta, export_dir, results_dir, repeats, threads, stem, records_dir)
    check_writable(Path(results_dir) / "deploy" / "classification")
    args, cfg, model = load_run(ckpt)
    kind = uniform_kind(model.backbone.precision)
    why = deploy.unsupported_reason(model.backbone)
    if why:
        raise BenchError(f"{ckpt}: backbone {args['backbone']} (variant {args.get('variant')}) cannot be deployed: {why}")
    machine = _machine()
    stem_prec = deploy.stem_precision(stem, kind)
    kernel, note = kernel_name(kind, stem_prec)
    calib = split_tensors(cfg, "train")[0][:64]
    images, labels = split_tensors(cfg, "test")
    pre = model.data_preprocessor
    fq = _fake_quant_fn(model)
    export = Path(export_dir) if export_dir else ckpt.parent
    export_file = export / f"{ckpt.stem}_deployed.pt"
    if kernel.startswith("fake-quant"):
        deployed, size = fq, None
    else:
        deployed = deploy.deploy(model, calib=(calib.float() - pre.mean) / pre.std, stem=stem_prec)
        size = deploy.save(deployed, export_file, meta=dict(checkpoint=str(ckpt), run=args, kernel=kernel))
        deployed = deploy.load(export_file)  # measure what a user loads
    p_fq, p_dep = predictions(fq, images), predictions(deployed, images)
    with torch.no_grad():
        x = images[:32]
        diff = float((fq(x) - deployed(x)).abs().max())
    x1, xb = images[:1], images[:batch].repeat((batch + len(images) - 1) // len(images), 1, 1, 1)[:batch]
    lat = {t: median_ms(deployed, x1, t, repeats) for t in threads}
    lat_fq = {t: median_ms(fq, x1, t, max(1, repeats // 3)) for t in threads}
    tput = batch / median_ms(deployed, xb, max(threads), min(5, repeats)) * 1e3
    top_rec, rec_file = recorded_metric(ckpt, args, records_dir)
    engines = {}
    if kind in ("int8", "fp32") and not kernel.startswith("fake-quant"):
        onnx_file = export / f"{ckpt.stem}_{'qdq' if kind == 'int8' else 'fp32'}.onnx"
        engines = engine_results(deployed, onnx_file, calib, x1, images, threads, repeats, torch_pred=p_dep)
        for row in engines.get("engines", {}).values():
            row["top1"] = float((row.pop("pred") == labels).float().mean())
    params_fp32 = sum(p.numel() for p in model.backbone.parameters()) * 4 + sum(
        p.numel() for p in model.head.parameters()) * 4
    rec = dict(
        task="classification", backbone=args["backbone"], variant=args.get("variant"), kind=kind,
        schedule=args["schedule"], schedule_label=cfg.bench["schedule_label"], checkpoint=str(ckpt),
        kernel=kernel, note=note, stem=None if kernel.startswith("fake-quant") else stem_prec,
        export_file=str(export_file) if size else None, export_bytes=size,
        fp32_params_bytes=params_fp32, input_size=list(images.shape[1:]),
        latency_ms_batch1={str(t): round(v, 3) for t, v in lat.items()},
        fake_quant_latency_ms_batch1={str(t): round(v, 3) for t, v in lat_fq.items()},
        throughput=dict(batch=batch, threads=max(threads), images_per_s=round(tput, 1)), repeats=repeats,
        top1_deployed=float((p_dep == labels).float().mean()), top1_fake_quant=float((p_fq == labels).float().mean()),
        top1_recorded=top_rec, record=rec_file, test_images=len(labels),
        argmax_agreement=float((p_dep == p_fq).float().mean()), max_abs_logit_diff=diff, engines=engines or None,
        machine=machine, timing_note="medians; see load_avg_1min_at_start for how busy the machine was",
        commit=commit(), versions=versions(), command=f"bench deploy {ckpt} --repeats {repeats} --batch {batch} --stem {stem}",
    )
    eng, ms = fastest(rec)  # what the tables' deployed-latency ratio should use (the fastest engine measured)
    rec["fastest"] = dict(engine=eng, latency_ms_batch1_1T=ms)
    out = Path(results_dir) / "deploy" / "classification" / f"{_run_of(ckpt, args, rec_file)}.json"
    atomic_write(out, json.dumps(portable(rec), indent=1, sort_keys=True) + "\n")
    write_table(results_dir)
    return rec


def _mb(b):
    return f"{b / 1e6:.3f}" if b else "-"


def write_table(results_dir=RESULTS_DIR) -> Path:
    """<results_dir>/deploy.md from every record in <results_dir>/deploy/<task>/ (nothing typed by hand)."""
    folder = Path(results_dir) / "deploy" / "classification"
    recs = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    order = {"binary": 0, "int8": 1, "fp32": 2}
    recs.sort(key=lambda r: (order.get(r["kind"], 9), r["checkpoint"]))
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["# Deployed classification models (real kernels on this CPU)", "",
             "| backbone | schedule | kernel | file (MB) | fp32 params (MB) | batch-1 1T (ms) | batch-1 2T (ms) "
             "| fake-quant 1T (ms) | throughput (img/s) | top-1 deployed | top-1 fake-quant | top-1 recorded "
             "| argmax agreement (%) | CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        lat, lfq, tp = r["latency_ms_batch1"], r["fake_quant_latency_ms_batch1"], r["throughput"]
        lines.append(f"| {r['backbone']}{' ' + r['variant'] if r.get('variant') else ''} | {r['schedule']} | "
                     f"{r['kernel']} | {_mb(r['export_bytes'])} | {_mb(r['fp32_params_bytes'])} | "
                     f"{lat.get('1', '-')} | {lat.get('2', '-')} | {lfq.get('1', '-')} | "
                     f"{tp['images_per_s']} (batch {tp['batch']}, {tp['threads']}T) | {pct(r['top1_deployed'])} | "
                     f"{pct(r['top1_fake_quant'])} | {pct(r['top1_recorded'])} | {pct(r['argmax_agreement'])} | "
                     f"{r['machine'].get('cpu')} |")
    labels = sorted({f"`{r['schedule']}`: {r['schedule_label']}" for r in recs})
    m = recs[0]["machine"] if recs else {}
    lines += ["", f"Input {recs[0]['input_size'] if recs else '-'} (the run's test images), batch-1 latency = median "
              f"of {recs[0]['repeats'] if recs else '-'} calls; CPU: {m.get('cpu')} ({m.get('cores')} cores), "
              f"torch {m.get('torch')}. The machine was shared with other jobs (1-min load average at the start: "
              + ", ".join(str(r['machine'].get('load_avg_1min_at_start')) for r in recs) + "): timings are noisy.",
              "Schedules: " + "; ".join(labels) + "."]
    if any(r["schedule"] == "smoke" for r in recs):
        lines.append("Smoke-trained checkpoints: the accuracies show agreement between deployed and fake-quant "
                     "models, not what the backbones can reach.")
    lines += [f"- {r['backbone']}: {r['note']}" for r in recs if r.get("note")]
    for task in DENSE_TASKS:
        dense = [json.loads(f.read_text()) for f in sorted((Path(results_dir) / "deploy" / task).glob("*.json"))]
        if not dense:
            continue
        dense.sort(key=lambda r: (order.get(r["kind"], 9), r["checkpoint"]))
        lines += ["", f"## {task}: the backbone on the kernels, neck and head as trained (fake-quant)", "",
                  "| backbone | schedule | kernel | backbone file (MB) | backbone b1 1T (ms) | backbone b1 2T (ms) | "
                  "fake-quant backbone 1T (ms) | input | metric | deployed | fake-quant | recorded | load at start | "
                  "ONNX engines, backbone b1 1T (ms; feature rel. RMS vs the torch-deployed backbone) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        f4 = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
        for r in dense:
            lat, lfq = r["latency_ms_batch1"], r["fake_quant_latency_ms_batch1"]
            lines.append(f"| {r['backbone']} | {r['schedule']} | {r['kernel']} | {_mb(r['export_bytes'])} | "
                         f"{lat.get('1', '-')} | {lat.get('2', '-')} | {lfq.get('1', '-')} | "
                         f"{'x'.join(map(str, r['input_size']))} | {r['metric_name']} | {f4(r['metric_deployed'])} | "
                         f"{f4(r['metric_fake_quant'])} | {f4(r['metric_recorded'])} | "
                         f"{r['machine'].get('load_avg_1min_at_start')} | {_dense_engines_cell(r)} |")
    lines += _engine_section(recs) + _isa_section(results_dir)
    out = Path(results_dir) / "deploy.md"
    atomic_write(out, "\n".join(lines) + "\n")
    return out


def _dense_engines_cell(r) -> str:
    rows = ((r.get("engines") or {}).get("engines") or {}).items()
    return "; ".join(f"{n} {e['version']} {e['latency_ms_batch1'].get('1', '-')} "
                     f"({e.get('rel_rms_feature_diff_vs_torch', float('nan')):.2g})" for n, e in rows) or "-"


def _width(r):
    """The deployed run's width (from its run name, w<width>), '' when the name does not say."""
    m = re.search(r"_w([0-9.]+)_", Path(r.get("checkpoint", "")).parent.name + "_")
    return m.group(1) if m else ""


def _engine_section(recs) -> list[str]:
    """The INT8 / FP32 classification records' ONNX engines, and binary against the fastest INT8."""
    with_eng = [r for r in recs if r.get("engines")]
    if not with_eng:
        return []
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["", "## INT8 and FP32 on production engines (classification, the same checkpoints exported to ONNX)", "",
             "INT8 is exported as an ONNX QDQ graph with the trained model's own scales (backbones/deploy/onnx_export.py): "
             "per-channel int8 weights and per-tensor uint8 activations as trained; the residual adds quantized as a "
             "production model quantizes them (conv outputs at calibrated ranges, the identity at conv1's input "
             "scale); the stem conv, float in training, post-training quantized. Float: the input normalisation, "
             "the ReLU after each add, global pooling and the linear head. OpenVINO runs with INFERENCE_PRECISION_HINT "
             "f32 (left alone, it runs float layers in bf16 on this CPU).", "",
             "| backbone | width | schedule | engine | batch-1 1T (ms) | batch-1 2T (ms) | top-1 deployed | top-1 recorded | "
             "agreement with torch deployed (%) | convs as run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in with_eng:
        for name, e in r["engines"]["engines"].items():
            prims = "; ".join(f"{k} x{v}" for k, v in (e.get("conv_primitives") or {}).items()) or "-"
            lines.append(f"| {r['backbone']} | {_width(r) or '-'} | {r['schedule']} | {name} {e['version']} | "
                         f"{e['latency_ms_batch1'].get('1', '-')} | {e['latency_ms_batch1'].get('2', '-')} | "
                         f"{pct(e.get('top1'))} | {pct(r['top1_recorded'])} | {pct(e.get('agreement_with_torch'))} | "
                         f"{prims} |")
    lines += ["", "Binary against the fastest INT8 engine measured (batch 1, 1 thread, same schedule and width):", ""]
    for r in recs:
        if r["kind"] != "binary":
            continue
        peers = [q for q in recs if q["kind"] == "int8" and q["schedule"] == r["schedule"] and _width(q) == _width(r)
                 and q["machine"].get("cpu") == r["machine"].get("cpu")]
        if peers:
            eng, ms = fastest(peers[0])
            b = r["latency_ms_batch1"].get("1")
            lines.append(f"- {r['schedule']}{' width ' + _width(r) if _width(r) else ''}: binealnet {b} ms, INT8 {ms} ms "
                         f"on {eng}: binary "
                         f"{ms / b:.2f}x INT8's speed ({r['machine'].get('cpu')})" if b else
                         f"- {r['schedule']}: no binary latency")
        else:
            lines.append(f"- {r['schedule']}{' width ' + _width(r) if _width(r) else ''}: no INT8 record at that width on "
                         "the binary record's CPU "
                         f"({r['machine'].get('cpu')}): no ratio")
    return lines


def _peak_cell(r) -> str:
    p = r.get("inner_loop_peak")
    if not p:
        return "-"
    best, steps = r.get("binary_gmac_per_s_1T_best_call"), r.get("binary_gmac_per_s_1T_step_sum")
    return (f"{p['gmac_per_s']} ({p['path']}; whole backbone {r['binary_gmac_per_s_1T'] / p['gmac_per_s']:.2f}x of it"
            + (f", {best / p['gmac_per_s']:.2f}x at its best call" if best else "")
            + (f", {steps / p['gmac_per_s']:.2f}x by its steps' best calls ({steps} GMAC/s)" if steps else "") + ")")


def _isa_section(results_dir) -> list[str]:
    """Per instruction set: the peak model and floors (bench/roofline.py), and every --bench-224 record
    measured (one per CPU class we ran on)."""
    from . import roofline
    recs = [json.loads(f.read_text()) for f in sorted((Path(results_dir) / "deploy" / "bench224").glob("*.json"))]
    if not recs:
        return []
    lines = ["", "## Which instruction set favours binary (backbones at 224x224, batch 1, one core)", "",
             "Measured where we ran (`bench deploy --bench-224 --record`, random weights), modelled elsewhere "
             "(`bench roofline`: peak MACs per cycle from each instruction mix; a floor is compute only, every MAC at "
             "peak, memory free). Latencies: median / best call of the repeats (on a shared machine the best call is "
             "the closer estimate of an idle core); the fastest engine of each precision is named.", "",
             "| CPU (instruction set) | load at start | fp32 fastest (ms) | int8 fastest (ms) | binealnet (ms) | "
             "binealnet / fastest int8 speed | binary GMAC/s | kernel inner-loop peak (GMAC/s) | floors fp32 / int8 / "
             "binealnet (ms, nominal clock) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        f, fm = r["fastest_1T"], r.get("fastest_1T_min") or {}
        fl = r.get("floor_ms_1T") or {}
        cell = lambda n: f"{f[n]['ms']} / {fm[n]['ms'] if n in fm else '-'} ({f[n]['engine']})"  # noqa: E731
        ratio = f"{f['int8']['ms'] / f['binealnet']['ms']:.2f}x" + (
            f" / {fm['int8']['ms'] / fm['binealnet']['ms']:.2f}x" if fm else "")
        gm = f"{r['binary_gmac_per_s_1T']}" + (f" / {r['binary_gmac_per_s_1T_best_call']}"
                                                if r.get("binary_gmac_per_s_1T_best_call") else "")
        lines.append(f"| {r['machine']['cpu']} ({r['machine'].get('isa')}; {', '.join(r['machine'].get('isa_flags', []))}; "
                     f"tree {str(r.get('commit'))[:7]}) "
                     f"| {r['machine'].get('load_avg_1min_at_start')} | {cell('fp32')} | {cell('int8')} | "
                     f"{f['binealnet']['ms']} / {fm['binealnet']['ms'] if fm else '-'} | {ratio} | {gm} | "
                     f"{_peak_cell(r)} | {fl.get('fp32', '-')} / {fl.get('int8', '-')} / {fl.get('binealnet', '-')} at "
                     f"{r.get('floor_ghz')} GHz |")
    for r in recs:
        f, fm = r["fastest_1T"], r.get("fastest_1T_min") or r["fastest_1T"]
        sp = fm["int8"]["ms"] / fm["binealnet"]["ms"]
        lines.append(f"- Measured on {r['machine']['cpu']} ({r['machine'].get('isa')}): binealnet (width 1.5) runs at "
                     f"{sp:.2f}x the speed of INT8 on {fm['int8']['engine']} (best calls): binary "
                     f"{'wins' if sp > 1 else 'loses'} on this CPU.")
    for f in sorted((Path(results_dir) / "deploy" / "cycles").glob("*.json")):
        c = json.loads(f.read_text())
        a = c["array"]
        base = next((v["-"] for v in c["cycles"].values() if "-" in v), None)
        ks = sorted({k for v in c["cycles"].values() for k in v if k != "-"}, key=int)
        lines += ["", f"Systolic array (SCALE-Sim v3, {a['rows']}x{a['cols']} PEs, {a['dataflow']}, "
                  f"{a['ifmap_kb']}/{a['filter_kb']}/{a['ofmap_kb']} kB SRAM; `{c['command']}`), {c['size']}x{c['size']}, "
                  "batch 1, total cycles; a binary PE does K XNOR-popcount MACs per cycle, an INT8 PE one MAC "
                  "(bench/cycles.py states the K = 32 area assumption); float layers run on INT8 PEs:", "",
                  "| backbone | " + " | ".join(f"K = {k}" for k in ks) + " | INT8 PEs |",
                  "|---|" + "---|" * (len(ks) + 1)]
        for name, v in c["cycles"].items():
            cells = [f"{v[k]:,} ({base / v[k]:.2f}x int8)" if k in v and base else "-" for k in ks]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {v['-']:,} |" if "-" in v else
                         f"| {name} | " + " | ".join(cells) + " | - |")
    table, _ = roofline.floor_table()
    return lines + ["", "Modelled, every instruction-set class (`bench roofline`):", ""] + table





# ---------------------------------------------------------------- benchmark only: backbones at 224
def binary_macs(backbone, x):
    """Binary MACs of one forward (every binary QConv2d: out elements x in channels x k x k)."""
    from backbones.layers import QConv2d
    total, hooks = [0], []
    for m in backbone.modules():
        if isinstance(m, QConv2d) and m.weight_quantizer.bits == 1 and m.act_quantizer.bits == 1:
            hooks.append(m.register_forward_hook(lambda mod, i, o: total.__setitem__(
                0, total[0] + o.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1])))
    with torch.no_grad():
        backbone(x)
    for h in hooks:
        h.remove()
    return total[0]


def bench_224(repeats=10, threads=(1, 2), size=224, results_dir=None, export_dir=None, stem="fp32"):
    """Batch-1 latency of our three backbones (ImageNet stem, size x size) deployed: fp32, real INT8
    (torch.ops.quantized, and the ONNX export on OpenVINO / ONNX Runtime when installed), packed BNN;
    prints ms, the ratios against the fastest INT8 engine, and each against its floor on this CPU
    (bench/roofline.py). A benchmark, not a test (random weights; INT8 scales observed on random
    inputs). With ``results_dir``: writes <results_dir>/deploy/bench224/<cpu>.json."""
    import tempfile
    import warnings

    import backbones
    from backbones import deploy

    from . import roofline
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    machine = dict(_machine(), isa=getattr(roofline.this_cpu(), "name", None), isa_flags=roofline.isa_flags_present())
    rows, mins, macs, parts, convs, stems = {}, {}, {}, None, None, {}
    export = Path(export_dir or tempfile.mkdtemp(prefix="bench224_"))
    for name in ("fp32", "int8", "binealnet"):
        m = backbones.build(name, stem="imagenet", out_indices=(3,))
        if name == "int8":
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                m.train()(torch.randn(2, 3, size, size))  # observe activation scales
        m.eval()
        calib = torch.randn(2, 3, size, size)
        kind = "binary" if name == "binealnet" else name
        stems[name] = deploy.stem_precision(stem, kind)
        d = deploy.deploy_backbone(m, calib=calib, stem=stems[name])
        kernel = kernel_name(kind, stems[name])[0]
        ts = {str(t): times_ms(d, x, t, repeats) for t in threads}
        rows[name] = {kernel: {t: round(statistics.median(v), 3) for t, v in ts.items()}}
        mins[name] = {kernel: {t: round(v[0], 3) for t, v in ts.items()}}
        if name != "binealnet":
            eng = engine_results(d, export / f"{name}_{size}.onnx", calib, x, None, threads, repeats)
            for e, r in eng.get("engines", {}).items():
                label = f"{e} {r['version']} (ONNX{' QDQ' if name == 'int8' else ''})"
                rows[name][label], mins[name][label] = r["latency_ms_batch1"], r["latency_ms_batch1_min"]
        macs[name] = roofline.backbone_macs(name, size)
        if name == "binealnet" and kernel.startswith("packed"):
            parts, convs = binary_breakdown(d, x)
    bmacs = macs["binealnet"]["binary"]
    peak = inner_loop_peak()
    isa = roofline.this_cpu()
    ghz = _nominal_ghz()
    best = {n: min(r.items(), key=lambda kv: kv[1]["1"]) for n, r in rows.items()}
    best_min = {n: min(r.items(), key=lambda kv: kv[1]["1"]) for n, r in mins.items()}
    print(f"backbones at {size}x{size}, batch 1, median of {repeats}; CPU {machine['cpu']} ({machine['isa']}; "
          f"1-min load at start {machine['load_avg_1min_at_start']}: shared machine, noisy)")
    for name, r in rows.items():
        for kernel, lat in r.items():
            print(f"  {name:10s} {kernel:58s} " + "  ".join(f"{t}T {v:8.2f} ms (min {mins[name][kernel][t]:7.2f})"
                                                            for t, v in lat.items()))
    for t in map(str, threads):
        f, i, b = (min(v[t] for v in rows[n].values()) for n in ("fp32", "int8", "binealnet"))
        print(f"  {t}T fastest of each: int8/fp32 speed-up {f / i:.2f}x, binealnet/int8 speed-up {i / b:.2f}x, "
              f"binealnet/fp32 {f / b:.2f}x; binary {bmacs / 1e9:.2f} GMAC -> {bmacs / (b * 1e-3) / 1e9:.0f} binary GMAC/s")
    gmac = {k: round(bmacs / (b["binealnet"][1]["1"] * 1e-3) / 1e9, 1) for k, b in (("median", best), ("min", best_min))}
    if peak:
        bits = peak.get("word_bits", 64)
        print(f"  packed kernel's inner loop alone ({peak['path']}, {peak['pixels']} pixels x {16 if bits == 64 else 32} "
              f"channels of {bits}-bit words, L1-resident, "
              f"1 thread): {peak['gmac_per_s']:.0f} binary GMAC/s; the whole binealnet backbone at 1T reaches "
              f"{gmac['median'] / peak['gmac_per_s']:.2f}x of it at its median, {gmac['min'] / peak['gmac_per_s']:.2f}x "
              "at its best call")
    if parts:
        bm = bmacs / 1e6
        print(f"  binealnet step by step (best calls, 1T): stem conv {parts['stem_conv']:.2f} ms, max-pool+ReLU "
              f"{parts['maxpool_relu']:.2f}, packing {parts['packing']:.2f}, binary convs {parts['binary_convs']:.2f}; "
              f"sum {parts['sum']:.2f} ms -> {bm / parts['sum']:.0f} binary GMAC/s over the whole backbone, "
              f"{bm / parts['binary_convs']:.0f} in the binary convs"
              + (f" ({bm / parts['sum'] / peak['gmac_per_s']:.2f}x and {bm / parts['binary_convs'] / peak['gmac_per_s']:.2f}x "
                 "of the inner-loop peak)" if peak else ""))
    floors = {}
    if isa and ghz:
        for name in rows:
            floors[name] = round(roofline.floor_cycles(macs[name], isa) / (ghz * 1e6), 3)
            print(f"  {name:10s} floor on {isa.name} at {ghz:.2f} GHz (nominal): {floors[name]:.2f} ms; fastest 1T "
                  f"{best[name][1]['1']:.2f} ms = {floors[name] / best[name][1]['1']:.0%} of peak ({best[name][0]})")
    rec = dict(size=size, repeats=repeats, threads=list(threads), latency_ms_batch1=rows,
               fastest_1T={n: dict(engine=k, ms=v["1"]) for n, (k, v) in best.items()}, macs=macs,
               binary_gmac_per_s_1T=gmac["median"], binary_gmac_per_s_1T_best_call=gmac["min"], inner_loop_peak=peak,
               binealnet_steps_ms_best_call=parts, binealnet_convs_best_call=convs, stem_precision=stems,
               binary_gmac_per_s_1T_step_sum=round(bmacs / parts["sum"] / 1e6, 1) if parts else None,
               latency_ms_batch1_min=mins, fastest_1T_min={n: dict(engine=k, ms=v["1"]) for n, (k, v) in best_min.items()},
               floor_ms_1T=floors, floor_isa=getattr(isa, "name", None), floor_ghz=ghz, machine=machine,
               commit=commit(), versions=versions(), command=f"bench deploy --bench-224 --repeats {repeats} --stem {stem}",
               note="random weights; INT8 scales observed on random inputs; medians and best calls (min) on a shared "
               "machine: the best call is the closer estimate of an idle core")
    if results_dir:
        slug = "".join(c if c.isalnum() else "-" for c in f"{machine['cpu']}-{machine['isa']}").strip("-").lower()
        out = Path(results_dir) / "deploy" / "bench224" / f"{slug}.json"
        atomic_write(out, json.dumps(rec, indent=1, sort_keys=True) + "\n")
        print(f"record: {out}")
    return rec


def binary_breakdown(d, x, repeats=15) -> tuple[dict, list]:
    """Best-call ms of each step of a deployed binary backbone ``d`` on ``x`` (1 thread): stem conv, max-pool +
    ReLU, activation packing (all convs) and the binary convs (all); and each binary conv's own (block, conv,
    shapes, ms, binary GMAC/s). On a shared machine a whole forward is rarely left uninterrupted; each step
    is short enough to be, so their sum estimates an idle core."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)

    def best(fn):
        return min(_calls_ms(fn, repeats))
    try:
        with torch.no_grad():
            xc = x.float().contiguous(memory_format=torch.channels_last)
            out = dict(stem_conv=best(lambda: d.stem(xc)))
            y = d.stem(xc)
            out["maxpool_relu"] = best(lambda: d.stem_pool(y))
            h = d.stem_pool(y)
            out["packing"] = out["binary_convs"] = 0.0
            convs = []
            for i, b in enumerate(d.blocks):
                out1 = None
                for name in ("ds", "conv1", "conv2"):
                    c = b[name]
                    if c is None:
                        continue
                    xin = out1 if name == "conv2" else h
                    xp = c.pack(xin)
                    out["packing"] += best(lambda: c.pack(xin))
                    ms = best(lambda: c.conv(xp))
                    out["binary_convs"] += ms
                    o = c.conv(xp)
                    macs = o[0].numel() * c.C * c.k * c.k
                    convs.append(dict(block=i, conv=name, in_nhwc=list(xin.shape), out_nhwc=list(o.shape), k=c.k,
                                      stride=c.stride, ms=round(ms, 4), gmac_per_s=round(macs / ms / 1e6, 1)))
                    if name == "conv1":
                        out1 = c(xin)
                h = d._block_binary(b, h)
    finally:
        torch.set_num_threads(old)
    out = {k: round(v, 3) for k, v in out.items()}
    out["sum"] = round(sum(out.values()), 3)
    return out, convs


def _calls_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def inner_loop_peak(words=36, seconds=0.003, tries=100):
    """The packed kernel's inner loop alone on this CPU (one thread, L1-resident data, its widest tile):
    the best of ``tries`` short runs of ~``seconds`` (short: on a shared machine a long run is always
    interrupted); None when the kernels cannot be built."""
    from backbones import deploy
    from backbones.deploy import _ext
    ok, path = deploy.available()
    if not ok:
        return None
    ops = _ext.load()
    pixels = 4 if path.startswith("avx512") else 2
    unit = deploy.model.word_bits()  # the word size the deployed convs run (32 on AVX-512)
    rate = ops.tile_peak(words, 1000, pixels, "auto", unit)
    reps = max(1, int(rate * seconds / (words * pixels * 64 * (16 if unit == 64 else 32))))
    best = max(ops.tile_peak(words, reps, pixels, "auto", unit) for _ in range(tries))
    return dict(path=path, pixels=pixels, words=words, word_bits=unit, gmac_per_s=round(best / 1e9, 1))


def _nominal_ghz():
    """The CPU's nominal clock in GHz from /proc/cpuinfo ('cpu MHz', else the '@ x.xxGHz' of its name);
    None when unknown. Turbo clocks run higher: floors at this clock are a little pessimistic."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("cpu MHz"):
            return round(float(line.split(":")[1]) / 1e3, 3)
    return None


def add_args(p):
    """The `bench deploy` flags (bench/cli.py adds them to its `deploy` subcommand)."""
    p.add_argument("checkpoints", nargs="*", help="work_dirs/<task>/<run>/epoch_N.pth (bench_run.json beside): "
                   "classification whole, detection / segmentation backbones")
    p.add_argument("--export-dir", default=None, help="where the deployed files go (default: beside each checkpoint)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR),
                   help="records go to <dir>/deploy/<task>/, the table to <dir>/deploy.md")
    p.add_argument("--records-dir", default=None, help="where the runs' own records are (the --results-dir their "
                   "`bench run` wrote to); default: results/ beside the work dir, then the repository's")
    p.add_argument("--repeats", type=int, default=30, help="batch-1 calls per latency median")
    p.add_argument("--batch", type=int, default=64, help="batch of the throughput figure")
    p.add_argument("--bench-224", action="store_true", help="benchmark only: the three backbones at 224x224 on every "
                   "engine installed (torch; OpenVINO / ONNX Runtime for int8 and fp32), against this CPU's floor")
    p.add_argument("--stem", choices=STEM_PRECISIONS, default="fp32",
                   help="the stem conv's precision (float in training); default fp32, the model as trained; bf16 (auto: "
                   "bf16 for the binary backbone where the CPU computes it natively, AVX512-BF16 / AMX) is faster at "
                   "224 but a binary net amplifies its rounding: it changed 16 to 40%% of the predictions of the "
                   "CIFAR sweep checkpoints (fp32: under 0.5%%); recorded, and named in the kernel")
    p.add_argument("--record", action="store_true", help="with --bench-224: write <results-dir>/deploy/bench224/<cpu>.json "
                   "(results/deploy.md's per-instruction-set table reads it)")


def run(a):
    """Run parsed `bench deploy` arguments; BenchError for bad input."""
    if a.repeats < 1 or a.batch < 1:
        raise BenchError("--repeats and --batch must be >= 1")
    if not a.bench_224 and not a.checkpoints:
        raise BenchError("give checkpoints, or --bench-224")
    if a.bench_224:
        bench_224(a.repeats, results_dir=a.results_dir if a.record else None, stem=a.stem)
    for c in a.checkpoints:
        r = deploy_checkpoint(c, a.export_dir, a.results_dir, a.repeats, a.batch, records_dir=a.records_dir,
                              stem=a.stem)
        if r.get("timed") == "backbone":
            print(f"{r['task']} {r['backbone']}: {r['kernel']}; backbone file {_mb(r['export_bytes'])} MB; backbone "
                  f"batch-1 {r['latency_ms_batch1']} ms (fake-quant {r['fake_quant_latency_ms_batch1']}); "
                  f"{r['metric_name']} deployed {r['metric_deployed']:.4g} vs fake-quant {r['metric_fake_quant']:.4g} "
                  f"(recorded {r['metric_recorded']}); feature diff {r['max_rel_feature_diff']:.2g}"
                  + (f"; NOTE {r['note']}" if r.get("note") else ""))
            continue
        print(f"{r['backbone']}: {r['kernel']}; file {_mb(r['export_bytes'])} MB; batch-1 "
              f"{r['latency_ms_batch1']} ms; top-1 deployed {r['top1_deployed']:.3f} vs fake-quant "
              f"{r['top1_fake_quant']:.3f} (recorded {r['top1_recorded']}); agreement {r['argmax_agreement']:.3f}"
              + (f"; NOTE {r['note']}" if r.get("note") else ""))
    if a.checkpoints:
        print(f"table: {Path(a.results_dir) / 'deploy.md'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p)
    try:
        run(p.parse_args(argv))
    except BenchError as e:
        raise SystemExit(f"error: {e}") from None
    return 0


if __name__ == "__main__":
    main()
