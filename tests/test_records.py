"""Run records: names from the resolved config, no machine paths, no silent overwrite."""
import json
import re
from pathlib import Path

import pytest

import tasks
from bench import records
from bench.errors import BenchError

REPO = Path(__file__).resolve().parent.parent
#: a slash that starts a path word after a quote, a space, "=", "(" or a line start: /home/..., "/work/...
MACHINE_PATH = re.compile(r"""(?:^|[\s"'`(=,\[])/[\w.+-]+/""", re.M)


def _ident(task_name, backbone, width=None, schedule="smoke", **extra):
    """identity() of a run as the runner computes it, from the task's real config."""
    task = tasks.get(task_name)
    opts = task.options_with_defaults({"width": width} if width is not None else {})
    cfg = task.build_config(backbone, task.DEFAULT_DATA, schedule, "wd", 0, **opts)
    return records.identity(task_name, backbone, None, cfg.get("bench", {}), "adamw", schedule,
                            cfg.train_cfg.max_epochs, task.DEFAULT_DATA.name, 0, opts, **extra)


def test_the_preset_width_given_or_not_is_one_run():
    implicit = _ident("classification", "binealnet")
    explicit = _ident("classification", "binealnet", width=1.5)
    assert implicit == explicit and implicit["width"] == 1.5
    assert records.run_name(implicit) == "binealnet_w1.5_adamw_head-fp32_smoke-1ep_cifar10-sample_s0"
    assert records.run_name(_ident("classification", "binealnet", width=0.5)) != records.run_name(implicit)


def test_a_checkpoint_dependency_is_a_short_hash_of_its_run_not_a_path():
    meta = {"run": "fp32_w1_adamw_head-fp32_pretrain-short-4ep_cifar10-jpeg_s0", "task": "classification"}
    name = records.run_name(_ident("classification", "int8", teacher_run=meta))
    assert re.search(r"_teacher-[0-9a-f]{8}_s0$", name) and "/" not in name and "pth" not in name
    # the same run found through another checkout's path is the same dependency
    old = dict(task="classification", backbone="fp32", schedule="pretrain-short", seed=0, recipe="adamw",
               task_options={}, data="/home/a/shared/data/cifar10-jpeg")
    assert records.dependency_hash(old) == records.dependency_hash(dict(old, data="../shared/data/cifar10-jpeg"))
    assert records.dependency_hash(old) != records.dependency_hash(dict(old, recipe="sgd"))


def _record(run="r_s0", **kw):
    rec = {k: None for k in records.REQUIRED_KEYS}
    rec.update(run=run, task="classification", backbone="fp32", variant=None, schedule="smoke", epochs=1, seed=0,
               data={"name": "d", "path": "/home/someone/shared/data/d"}, recipe={"name": "adamw"},
               config={"bench": {"width": 1.0}, "work_dir": "/home/someone/repo/work_dirs/classification/r_s0"},
               metric={"name": "top1", "value": 0.5}, cost={}, command="bench run --teacher /tmp/x/epoch_1.pth")
    rec.update(kw)
    return rec


def test_a_record_of_another_config_is_never_overwritten(tmp_path):
    path = records.write_record(_record(), tmp_path)
    records.write_record(_record(metric={"name": "top1", "value": 0.6}), tmp_path)  # a rerun replaces its own
    assert json.loads(path.read_text())["metric"]["value"] == 0.6
    with pytest.raises(BenchError, match="another configuration.*recipe 'adamw' vs 'sgd'"):
        records.write_record(_record(recipe={"name": "sgd"}, metric={"name": "top1", "value": 0.9}), tmp_path)
    assert json.loads(path.read_text())["metric"]["value"] == 0.6


def test_written_records_hold_no_machine_path(tmp_path):
    text = records.write_record(_record(), tmp_path).read_text()
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)
    rec = json.loads(text)
    assert rec["data"]["path"] == "../shared/data/d"
    assert rec["config"]["work_dir"] == "work_dirs/classification/r_s0"
    assert records.portable(f"{REPO}/data/x and BNN/INT8, 3 img/s") == "data/x and BNN/INT8, 3 img/s"


def test_no_file_under_results_holds_an_absolute_path():
    found = []
    for f in sorted((REPO / "results").rglob("*")):
        if f.is_file() and f.suffix in (".json", ".md", ".txt", ".log", ".csv"):
            for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                if MACHINE_PATH.search(line):
                    found.append(f"{f.relative_to(REPO)}:{n}: {line.strip()[:120]}")
    assert not found, "\n".join(found[:20])


def test_committed_records_are_named_by_their_identity():
    wrong = []
    for f in sorted((REPO / "results").glob("*/*.json")):
        rec = json.loads(f.read_text())
        if f.stem != records.run_name(records.record_identity(rec)) or rec["run"] != f.stem:
            wrong.append(f.relative_to(REPO).as_posix())
    assert not wrong, wrong


def test_runs_started_together_in_one_folder_pass_the_write_check(tmp_path):
    """A campaign's --parallel runs probe the same results folder at once (two pretraining runs
    failed so, 2026-12-05): no probe may remove another's, and none is left behind."""
    from concurrent.futures import ThreadPoolExecutor

    def probe(_):
        for _ in range(200):
            records.check_writable(tmp_path / "classification")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(probe, range(8)))  # re-raises the first failure
    assert list((tmp_path / "classification").iterdir()) == []
