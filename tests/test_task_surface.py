"""The task surface: every registered task conforms; a new task is one class (shown with a throwaway
task that trains, gets a record and a table row without touching bench/ or other tasks); quantized
layers built by OpenMMLab keep their scales after the Runner's init; the tables' headline columns."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import backbones
import tasks
from backbones import layers
from backbones.quantizers import BinaryActivationQuantizer, BinaryWeightQuantizer, Int8Quantizer
from bench import results
from bench.cli import main
from bench.cost import count_cost

TINY = {"width": 0.25}


# ---------------------------------------------------------------- conformance of every registered task
@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_task_conforms(name, tmp_path):
    from bench.runner import build_task_model
    task = tasks.get(name)
    assert task.NAME == name and {"name", "key", "higher_is_better"} <= set(task.METRIC)
    assert type(task).__module__.split(".")[1] == name  # tasks.names() lists tasks by module, unimported
    assert "smoke" in task.SCHEDULES and all("label" in s for s in task.SCHEDULES.values())
    assert Path(task.DEFAULT_DATA).is_dir(), "the embedded sample must ship with the project"
    assert all(set(spec) >= {"type", "default", "help"} for spec in task.OPTIONS.values())
    task.validate_data(task.DEFAULT_DATA)
    info = task.data_info(task.DEFAULT_DATA, "smoke")
    assert len(info["sha256"]) == 64 and info["path"] == str(task.DEFAULT_DATA)
    with pytest.raises(tasks.DataError) as e:
        task.validate_data(tmp_path / "no-such-dir")
    assert "no-such-dir" in str(e.value)
    opts = {k: v for k, v in TINY.items() if k in task.OPTIONS}
    # the smoke config builds for every preset, and its model runs on the task's own example inputs
    for backbone in backbones.PRESETS:
        cfg = task.build_config(backbone, task.DEFAULT_DATA, "smoke", tmp_path, 0,
                                **task.options_with_defaults(opts))
        assert cfg.bench.schedule == "smoke" and cfg.train_cfg.max_epochs >= 1
    _, model = build_task_model(name, "binealnet", "smoke", **opts)
    xs = task.example_inputs("smoke")
    assert isinstance(xs, tuple) and all(x.shape[0] == 1 for x in xs)
    cost = count_cost(model, xs, forward=lambda m, xs: task.forward_for_cost(m, *xs))
    assert cost.macs > 0 and cost.to_dict()["macs_by_bits"].get("1/1", 0) > 0  # the binary backbone is counted
    assert isinstance(task.format_metric(task.METRIC["name"], 0.5), str)


def test_unknown_option_is_refused_by_the_task():
    task = tasks.get("classification")
    with pytest.raises(tasks.BenchError, match="--model: not an option of task classification"):
        task.options_with_defaults({"model": "fcn"})


def test_task_options_do_not_collide(capsys):
    """Each task's flags are parsed after --task: detection's --model choices never reach another task."""
    with pytest.raises(SystemExit):
        main(["run", "--task", "detection", "--help"])
    det_help = capsys.readouterr().out
    assert "--head-precision" in det_help and "--compile" not in det_help
    with pytest.raises(SystemExit):
        main(["run", "--task", "classification", "--help"])
    cls_help = capsys.readouterr().out
    assert "--compile" in cls_help and "--head-precision" not in cls_help


# ---------------------------------------------------------------- a throwaway task: one class, nothing else
class _ToyData(torch.utils.data.Dataset):
    """Points in 2 clusters; the label is the cluster (read from a real file so validate_data has work)."""

    def __init__(self, root, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.x = torch.randn(n, 3, 8, 8, generator=g) * 0.3 + (self.y.float() * 2 - 1).view(-1, 1, 1, 1)
        self.metainfo = {"root": root}

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"inputs": self.x[i], "data_samples": self.y[i]}


def _toy_task(tmp_path):
    from mmengine.config import Config
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.registry import DATASETS, METRICS, MODELS

    from tasks import common

    class ToyModel(BaseModel):
        def __init__(self, backbone, hidden):
            super().__init__()
            self.backbone = backbones.BiNealNet(**backbone)
            self.head = nn.Sequential(nn.Linear(self.backbone.out_channels[-1], hidden), nn.ReLU(),
                                      nn.Linear(hidden, 2))

        def forward(self, inputs, data_samples=None, mode="tensor"):
            x = torch.stack(inputs) if isinstance(inputs, list) else inputs
            logits = self.head(F.adaptive_avg_pool2d(self.backbone(x)[-1], 1).flatten(1))
            if mode == "loss":
                y = torch.stack(data_samples) if isinstance(data_samples, list) else data_samples
                return {"loss": F.cross_entropy(logits, y)}
            if mode == "predict":
                return [(logits, data_samples)]
            return logits

    class ToyAcc(BaseMetric):
        def process(self, data_batch, data_samples):
            for logits, y in data_samples:
                y = torch.stack(y) if isinstance(y, list) else y
                self.results.append(((logits.argmax(1) == y).sum().item(), len(y)))

        def compute_metrics(self, res):
            return {"acc": sum(r[0] for r in res) / sum(r[1] for r in res)}

    MODELS.register_module(name="ToyModel", module=ToyModel, force=True)
    METRICS.register_module(name="ToyAcc", module=ToyAcc, force=True)
    DATASETS.register_module(name="ToyData", module=_ToyData, force=True)
    data = tmp_path / "toy-data"
    data.mkdir()
    (data / "points.txt").write_text("two clusters\n")

    @tasks.register
    class Toy(tasks.Task):
        NAME = "toy"
        METRIC = {"name": "acc", "key": "acc", "higher_is_better": True}
        DEFAULT_DATA = data
        SCHEDULES = {"smoke": dict(epochs=1, batch_size=8, input_size=8, label="smoke (toy)")}
        OPTIONS = {"hidden": tasks.base.option(int, 4, help="hidden units of the head"),
                   "width": tasks.base.option(float, help="backbone width")}

        def validate_data(self, root):
            if not (Path(root) / "points.txt").is_file():
                raise tasks.DataError(f"{root}/points.txt: missing")

        def build_config(self, backbone, data_root, schedule, work_dir, seed, epochs=None, device="cpu",
                         variant=None, hidden=4, width=None):
            bb = common.backbone_kwargs(self, backbone, variant, width, stem="cifar", out_indices=(3,))
            loader = lambda n, shuffle: dict(  # noqa: E731
                batch_size=8, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=shuffle),
                collate_fn=dict(type="default_collate"), dataset=dict(type="ToyData", root=str(data_root), n=n,
                                                                      seed=seed))
            return Config(dict(
                default_scope="mmengine", model=dict(type="ToyModel", backbone=bb, hidden=hidden),
                work_dir=str(work_dir), train_dataloader=loader(32, True), test_dataloader=loader(16, False),
                train_cfg=dict(by_epoch=True, max_epochs=epochs or 1), test_cfg=dict(),
                test_evaluator=dict(type="ToyAcc"),
                optim_wrapper=common.optim_wrapper(device, dict(type="AdamW", lr=1e-3)),
                default_hooks=common.default_hooks(), randomness=dict(seed=seed), env_cfg=common.env_cfg(device),
                bench=dict(schedule=schedule, schedule_label="smoke (toy)", backbone=bb, width=bb["width"])))

        def forward_for_cost(self, model, x):
            return model(x)

    return Toy


@pytest.fixture
def toy_task(tmp_path):
    cls = _toy_task(tmp_path)
    yield cls
    del tasks.TASKS[cls.NAME]


def test_a_new_task_is_one_class(tmp_path, toy_task, capsys, monkeypatch):
    import bench.runner
    res = tmp_path / "res"
    # the commit is read once per process: a later HEAD never reaches the record
    first = bench.runner.commit()
    monkeypatch.setenv("BENCH_COMMIT", "a-later-commit")
    assert main(["run", "--task", "toy", "--backbone", "binealnet", "--hidden", "3", "--width", "0.25",
                 "--results-dir", str(res), "--work-dir", str(tmp_path / "wd")]) == 0
    (rec,) = results.load_records(res, "toy")
    assert rec["metric"]["name"] == "acc" and rec["task_options"] == {"hidden": 3, "width": 0.25}
    assert rec["config"]["model"]["hidden"] == 3 and rec["commit"] == first != "a-later-commit"
    assert rec["cost"]["macs_by_bits"]["1/1"] > 0
    results.report(res)
    table = (res / "toy.md").read_text()
    assert "| binealnet |  | width=0.25, recipe=task-default |" in table and "toy" in (res / "README.md").read_text()
    # its options are its own: another task's flag is refused in one line
    with pytest.raises(SystemExit) as e:
        main(["run", "--task", "toy", "--compile", "true"])
    assert e.value.code == 2 and "--compile is not an option of task toy" in capsys.readouterr().err


# ---------------------------------------------------------------- quantized layers and the Runner's init
def test_binary_head_scales_follow_weights_after_runner_init(tmp_path):
    """Neck/head swapped to binary, then the Runner's init_weights re-initialises them: every binary
    beta must equal mean|W| of the weight it ends with (it was 1-26x off before)."""
    import backbones.openmmlab  # noqa: F401
    from mmengine.runner import Runner
    det = tasks.get("detection")
    cfg = det.build_config("binealnet", det.DEFAULT_DATA, "smoke", tmp_path, 0, width=0.25, head_precision="binary")
    runner = Runner.from_cfg(cfg)
    runner._init_model_weights()
    checked = 0
    for name, m in runner.model.named_modules():
        wq = getattr(m, "weight_quantizer", None)
        if isinstance(wq, BinaryWeightQuantizer):
            w = m.weight.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else m.weight
            torch.testing.assert_close(wq.beta.flatten(), w.abs().mean(dim=(1, 2, 3)), msg=name)
            checked += 1
    assert checked > 10


def test_qconv_conv_cfg_makes_a_stock_neck_binary():
    """conv_cfg=dict(type='QConv', ...) builds quantized convs inside a stock mmdet FPN."""
    import backbones.openmmlab  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope("mmdet")
    fpn = MODELS.build(dict(type="FPN", in_channels=[8, 16], out_channels=8, num_outs=2,
                            conv_cfg=dict(type="QConv", w="binary", a="binary")))
    convs = [m for m in fpn.modules() if isinstance(m, layers.QConv2d)]
    assert len(convs) == 4 and all(c.weight_quantizer.bits == 1 and c.act_quantizer.bits == 1 for c in convs)
    out = fpn([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])
    assert [o.shape[-1] for o in out] == [8, 4]


# ---------------------------------------------------------------- strides / dilations and -1 padding
def test_output_stride_8_with_dilations():
    m = backbones.build("binealnet", width=0.25, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
    outs = m(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]
    dil = [c.dilation for c in m.stages[3].modules() if isinstance(c, layers.QConv2d) and c.kernel_size == (3, 3)]
    assert (4, 4) in dil


def _count_convs(fn):
    """How many conv2d calls ``fn`` makes (a TorchFunctionMode sees every F.conv2d)."""
    from torch.overrides import TorchFunctionMode
    calls = []

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.conv2d:
                calls.append(args[0].shape[0])
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return calls


def test_eval_border_term_is_computed_once_per_shape():
    conv = layers.QConv2d(4, 6, 3, padding=2, dilation=2, bias=False,
                          weight_quantizer=BinaryWeightQuantizer((6, 4, 3, 3)), act_quantizer=BinaryActivationQuantizer(4))
    x = torch.randn(1, 4, 9, 9)
    train_out = conv(x).detach()
    conv.eval()
    with torch.no_grad():
        first = _count_convs(lambda: conv(x))
        second = _count_convs(lambda: conv(x))
        torch.testing.assert_close(conv(x), train_out)  # same arithmetic (BN-free layer: modes agree)
        assert len(first) == 2 and len(second) == 1  # the ring conv is not repeated at inference
        with torch.no_grad():
            conv.weight.mul_(-1)  # new weights: the cached ring must not be reused
        conv.train()
        retrained = conv(x)
        conv.eval()
        torch.testing.assert_close(conv(x), retrained)


# ---------------------------------------------------------------- INT8 quantizer state
def test_int8_uncalibrated_eval_calibrates_and_warns():
    q = Int8Quantizer(per_channel=False).eval()
    x = torch.linspace(-2, 2, 101)
    with pytest.warns(UserWarning, match="never observed"):
        y = q(x)
    torch.testing.assert_close(y, torch.fake_quantize_per_tensor_affine(x, 2 / 127, 0, -127, 127))


def test_int8_learned_scale_survives_resume():
    q = Int8Quantizer(per_channel=False, learned=True).train()
    q(torch.randn(1000))
    with torch.no_grad():
        q.scale_param.fill_(0.123)  # "learned" away from the first observation
    resumed = Int8Quantizer(per_channel=False, learned=True)
    resumed.load_state_dict(q.state_dict())
    resumed.train()(torch.randn(1000) * 100)  # a first training step after resume must not re-observe
    assert resumed.scale_param.item() == pytest.approx(0.123)


# ---------------------------------------------------------------- the tables' headline columns
def _record(task, backbone, metric, ops, backbone_ops, latency_ms, run=None):
    return {"run": run or f"{backbone}_x", "task": task, "backbone": backbone, "variant": None,
            "metric": {"name": "top1", "value": metric, "higher_is_better": True, "secondary": {}},
            "cost": {"ops": ops, "bops": 0, "macs": ops, "macs_by_bits": {}, "params": 1, "size_bits": 8,
                     "parts": {"backbone": {"ops": backbone_ops}}},
            "speed": {"latency_ms_b1": latency_ms, "throughput_img_s": 1000 / latency_ms * 2, "throughput_batch": 8},
            "schedule": "short", "epochs": 4, "seed": 0, "data": {"name": "d", "path": "d", "sha256": "0" * 64},
            "config": {"bench": {}}, "commit": "c", "versions": {}, "device": "cpu", "wall_s": 1.0}


def test_overview_columns_from_known_records(tmp_path):
    recs = [_record("classification", "binealnet", 0.6, 30e6, 20e6, 8.0),
            _record("classification", "int8", 0.8, 600e6, 500e6, 2.0),
            _record("classification", "fp32", 0.9, 900e6, 800e6, 4.0)]
    for r in recs:
        results.write_record(r, tmp_path)
    results.report(tmp_path)
    row = next(line for line in (tmp_path / "classification.md").read_text().splitlines() if line.startswith("| [classif"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in (tmp_path / "classification.md").read_text().splitlines() if line.startswith("| task"))
    col = dict(zip([c.strip() for c in header.strip("|").split("|")], cells))
    assert (col["binealnet"], col["int8"], col["fp32"]) == ("0.6", "0.8", "0.9")
    assert col["metric BNN/INT8"] == "0.750"            # 0.6 / 0.8, not the inverse
    assert col["OPs BNN/INT8"] == "0.050"               # 30 / 600: total OPs
    assert col["backbone OPs BNN/INT8"] == "0.040"      # 20 / 500: backbone part only
    assert col["latency BNN/INT8"] == "4.000"           # 8 ms / 2 ms
    assert (col["OPs binealnet (M)"], col["OPs int8 (M)"]) == ("30", "600")
    assert col["deployed latency 1T BNN/INT8"] == ""     # nothing deployed yet
    table = (tmp_path / "classification.md").read_text()
    int8_row = next(line for line in table.splitlines() if line.startswith("| int8 "))
    assert "| 2 | 1e+03 @b8 |" in int8_row  # latency 2 ms, throughput 1000 img/s at batch 8, as recorded
    assert "deployed b1 1T (ms)" not in table
    # `bench deploy` records name the run record they deployed: their columns join that row
    for r, ms in ((recs[0], 3.0), (recs[1], 6.0)):
        d = dict(task="classification", record=f"somewhere/results/classification/{r['run']}.json",
                 latency_ms_batch1={"1": ms, "2": ms / 2}, export_bytes=2e6, top1_deployed=0.5, kernel="k")
        results.atomic_write(tmp_path / "deploy" / "classification" / f"{r['run']}.json", json.dumps(d))
    results.report(tmp_path)
    text = (tmp_path / "classification.md").read_text().splitlines()
    header = next(line for line in text if line.startswith("| task"))
    row = next(line for line in text if line.startswith("| [classif"))
    col = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert col["deployed latency 1T BNN/INT8"] == "0.500"  # 3 ms / 6 ms
    table = (tmp_path / "classification.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| backbone"))
    bnn = next(line for line in table if line.startswith("| binealnet "))
    col = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in bnn.strip("|").split("|")]))
    assert (col["deployed b1 1T (ms)"], col["deployed b1 2T (ms)"], col["deployed file (MB)"]) == ("3", "1.5", "2")
    fp32 = next(line for line in table if line.startswith("| fp32 "))
    assert fp32.rstrip().endswith("|  |  |  |  |  |")  # not deployed: empty cells


def test_pretrained_rows_share_a_table_apart_from_rows_from_scratch(tmp_path):
    """Each backbone starts from its own checkpoint, so rows group by the kind of run it came from
    (task, schedule, data), never by its path; rows trained from scratch stay in their own table."""
    for b, metric in (("binealnet", 0.1), ("int8", 0.2), ("fp32", 0.3)):
        r = _record("detection", b, metric, 1e6, 1e6, 1.0, run=f"{b}_pre")
        r["task_options"] = {"init_from": f"/somewhere/{b}_pretrain/epoch_4.pth"}
        r["init_from"] = {"checkpoint": r["task_options"]["init_from"],
                          "run": {"task": "classification", "schedule": "pretrain-short", "data": "../d/cifar10-jpeg"}}
        results.write_record(r, tmp_path)
    results.write_record(_record("detection", "int8", 0.5, 1e6, 1e6, 1.0, run="int8_scratch"), tmp_path)
    results.report(tmp_path)
    rows = [line for line in (tmp_path / "detection.md").read_text().splitlines() if line.startswith("| [detection")]
    assert len(rows) == 2
    pre = next(line for line in rows if "backbone from classification `pretrain-short`" in line)
    assert [c.strip() for c in pre.strip("|").split("|")][5:8] == ["0.1", "0.2", "0.3"]
    table = (tmp_path / "detection.md").read_text()
    assert table.count("## schedule") == 2 and "/somewhere/" not in table.split("| backbone")[0]


def test_group_header_names_every_device_of_its_rows(tmp_path):
    """Rows of one table can come from different machines (an older GPU's rows beside a newer's)."""
    for b, dev in (("int8", "cuda: A"), ("fp32", "cuda: B")):
        r = _record("classification", b, 0.5, 1e6, 1e6, 1.0)
        r["device"] = dev
        results.write_record(r, tmp_path)
    results.report(tmp_path)
    assert "device cuda: A; cuda: B" in (tmp_path / "classification.md").read_text()


def test_report_skips_a_bad_record_and_keeps_names_inside(tmp_path):
    results.write_record(_record("classification", "int8", 0.8, 600e6, 500e6, 2.0), tmp_path)
    (tmp_path / "classification" / "list.json").write_text("[1, 2]")
    (tmp_path / "classification" / "bytes.json").write_bytes(b"\xff\xfe")
    evil = _record("classification", "fp32", 0.9, 900e6, 800e6, 4.0)
    evil["task"] = "../x"
    (tmp_path / "classification" / "evil.json").write_text(json.dumps(evil))
    with pytest.warns(UserWarning, match="skipped"):
        results.report(tmp_path)
    assert (tmp_path / "classification.md").is_file() and not (tmp_path.parent / "x.md").exists()
    with pytest.raises(tasks.BenchError):
        results.write_record(evil, tmp_path)


def test_embedded_samples_are_small():
    for t in tasks.TASKS.values():
        size = sum(f.stat().st_size for f in Path(t.DEFAULT_DATA).rglob("*") if f.is_file())
        assert size < 3_000_000, (t.NAME, size)
        assert any(Path(t.DEFAULT_DATA).glob("SOURCE.md")), f"{t.DEFAULT_DATA}/SOURCE.md: say where the sample is from"



def test_failed_record_write_keeps_the_finished_run(tmp_path, toy_task, capsys, monkeypatch):
    import errno

    import bench.runner

    def full_disk(record, results_dir):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(bench.runner, "write_record", full_disk)
    wd = tmp_path / "wd"
    assert main(["run", "--task", "toy", "--backbone", "fp32", "--width", "0.25", "--work-dir", str(wd),
                 "--results-dir", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert "No space left" in err and str(wd / "record.json") in err
    kept = json.loads((wd / "record.json").read_text())
    assert kept["task"] == "toy" and kept["metric"]["name"] == "acc"


def test_overview_reference_row_and_best_recipe(tmp_path):
    recs = [_record("classification", "int8", 0.70, 600e6, 500e6, 2.0, run="int8-sgd"),
            _record("classification", "int8", 0.80, 600e6, 500e6, 2.0, run="int8-adamw"),
            _record("classification", "binealnet", 0.60, 30e6, 20e6, 8.0),
            dict(_record("classification", "bicubic", 0.5, 1, 1, 1.0), epochs=0)]
    for r in recs:
        results.write_record(r, tmp_path)
    results.report(tmp_path)
    rows = [line for line in (tmp_path / "classification.md").read_text().splitlines() if line.startswith("| [classif")]
    assert len(rows) == 1  # the untrained reference row joins the trained group
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[6] == "0.8" and cells[8] == "bicubic 0.5" and cells[9] == "0.750"  # best int8 recipe: 0.6/0.8


def test_overview_keeps_seeds_apart(tmp_path):
    """Two seeds of one config are two rows, each with its own ratio: never the best seed per backbone."""
    recs = [_record("classification", "int8", 0.80, 600e6, 500e6, 2.0, run="int8-s0"),
            _record("classification", "binealnet", 0.60, 30e6, 20e6, 8.0, run="bnn-s0"),
            dict(_record("classification", "int8", 0.70, 600e6, 500e6, 2.0, run="int8-s1"), seed=1),
            dict(_record("classification", "binealnet", 0.65, 30e6, 20e6, 8.0, run="bnn-s1"), seed=1)]
    for r in recs:
        results.write_record(r, tmp_path)
    results.report(tmp_path)
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in (tmp_path / "classification.md").read_text().splitlines() if line.startswith("| [classif")]
    assert sorted((r[2], r[5], r[6], r[9]) for r in rows if "mean" not in r[2]) == [
        ("short (4 ep)", "0.6", "0.8", "0.750"), ("short (4 ep, seed 1)", "0.65", "0.7", "0.929")]
    assert (tmp_path / "classification.md").read_text().count("## schedule `short`") == 2


def test_seed_means_against_hand_computed_statistics(tmp_path):
    """A config run at several seeds gets a mean row: mean +- sample s.d. per backbone, BNN/INT8 of the
    means and the range of the per-seed ratios. Rows at one seed, untrained rows and variants stay out."""
    bnn, int8 = {0: 0.60, 1: 0.65, 2: 0.70}, {0: 0.80, 1: 0.70, 2: 0.60}
    recs = [dict(_record("classification", "binealnet", v, 30e6, 20e6, 8.0, run=f"bnn-s{s}"), seed=s)
            for s, v in bnn.items()]
    recs += [dict(_record("classification", "int8", v, 600e6, 500e6, 2.0, run=f"int8-s{s}"), seed=s)
             for s, v in int8.items()]
    recs += [_record("classification", "fp32", 0.9, 900e6, 800e6, 4.0),  # one seed: no mean
             dict(_record("classification", "int8", 0.1, 600e6, 500e6, 2.0, run="ptq"), epochs=0),
             dict(_record("classification", "binealnet", 0.1, 30e6, 20e6, 8.0, run="v-s1"), seed=1, variant="v"),
             dict(_record("classification", "binealnet", 0.2, 30e6, 20e6, 8.0, run="v-s2"), seed=2, variant="v")]
    for r in recs:
        results.write_record(r, tmp_path)
    results.report(tmp_path)
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in (tmp_path / "classification.md").read_text().splitlines() if line.startswith("| [classif")]
    assert [r[2] for r in rows] == ["short (4 ep)", "short (4 ep, seed 1)", "short (4 ep, seed 2)",
                                    "short (4 ep, mean of seeds 0, 1, 2)"]
    mean = rows[-1]
    # mean(0.6, 0.65, 0.7) = 0.65, s.d. 0.05; mean(0.8, 0.7, 0.6) = 0.7, s.d. 0.1 (ptq's 0.1 left out)
    assert mean[5:8] == ["0.65 ± 0.05 (n=3)", "0.7 ± 0.1 (n=3)", ""]
    # 0.65 / 0.7; per seed 0.6/0.8 = 0.75 to 0.7/0.6 = 1.17
    assert mean[9] == "0.929 (per seed 0.75 to 1.17)"
    assert mean[10] == "0.050" and mean[12] == ""  # OPs 30/600 as any seed; no latency for a mean
    table = (tmp_path / "classification.md").read_text()
    across = table.split("## Across seeds")[1]
    bnn_rows = [line for line in across.splitlines() if line.startswith("| binealnet")]
    assert len(bnn_rows) == 2  # the preset and its variant, each over its own seeds
    cells = [c.strip() for c in bnn_rows[0].strip("|").split("|")]
    assert cells[3:] == ["3", "0.65", "0.05", "0.6", "0.7", "s0 0.6, s1 0.65, s2 0.7"]
    assert "| fp32 " not in across
    # a seed only the binary backbone ran leaves the ratio alone: it is over the seeds both ran
    results.write_record(dict(_record("classification", "binealnet", 0.05, 30e6, 20e6, 8.0, run="bnn-s3"), seed=3),
                         tmp_path)
    results.report(tmp_path)
    lines = (tmp_path / "classification.md").read_text().splitlines()
    mean = [[c.strip() for c in line.strip("|").split("|")] for line in lines if "mean of seeds" in line][0]
    assert mean[5].endswith("(n=4)") and mean[9] == "0.929 (per seed 0.75 to 1.17; seeds 0, 1, 2)"


def test_curves_plot_only_from_records_with_a_history(tmp_path):
    results.write_record(_record("classification", "int8", 0.8, 600e6, 500e6, 2.0), tmp_path)
    results.report(tmp_path)
    assert not (tmp_path / "classification_curves.png").exists()  # older records: no history, no plot
    r = _record("classification", "binealnet", 0.6, 30e6, 20e6, 8.0)
    r["history"] = {"train": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}],
                    "val": [{"epoch": 2, "top1": 0.6}]}
    results.write_record(r, tmp_path)
    assert tmp_path / "classification_curves.png" in results.report(tmp_path)
    assert (tmp_path / "classification_curves.png").stat().st_size > 1000
