"""bench CLI + mmengine runner on classification: records, tables, resume, bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import results
from bench.cli import main

REPO = Path(__file__).resolve().parent.parent
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg"
TINY = ["--width", "0.25"]  # small backbones keep the suite fast; the width is recorded


def _run(tmp_path, *args):
    return main(["run", "--task", "classification", "--results-dir", str(tmp_path / "res"),
                 "--work-dir", str(tmp_path / "wd"), *args])


def test_smoke_run_writes_complete_record(tmp_path, cifar_root):
    assert _run(tmp_path, "--backbone", "binealnet", "--data", str(cifar_root), *TINY) == 0
    (rec_file,) = (tmp_path / "res" / "classification").glob("*.json")
    rec = json.loads(rec_file.read_text())
    for k in results.REQUIRED_KEYS:
        assert k in rec, k
    assert rec["metric"]["name"] == "top1"
    # top-1 is a count over the 60 test images: the record holds an exact fraction of them
    assert round(rec["metric"]["value"] * 60) == pytest.approx(rec["metric"]["value"] * 60, abs=1e-6)
    assert rec["metric"]["higher_is_better"] is True
    assert rec["data"]["images"] == 10 * (12 + 6) and len(rec["data"]["sha256"]) == 64
    assert rec["cost"]["macs_by_bits"]["1/1"] > 0 and rec["cost"]["ops"] < rec["cost"]["macs"]
    assert rec["versions"]["torch"].startswith("2.") and rec["device"].startswith("cpu")
    assert rec["task_options"] == {"width": 0.25} and rec["config"]["model"]["backbone"]["width"] == 0.25
    assert rec["task_options_resolved"] == {"width": 0.25, "compile": False}
    sp = rec["speed"]
    assert sp["throughput_batch"] == 8 and sp["postprocess"] is False and sp["latency_ms_b1"] > 0


def test_interrupted_run_resumes(tmp_path, cifar_root):
    wd, res = tmp_path / "wd", tmp_path / "res"
    cmd = [sys.executable, "-m", "bench.cli", "run", "--task", "classification", "--backbone", "fp32",
           "--data", str(cifar_root), "--work-dir", str(wd), "--results-dir", str(res), *TINY]
    proc = subprocess.Popen(cmd + ["--epochs", "500"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (wd / "last_checkpoint").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # killed mid-run, at the first checkpoint or a little later
    proc.wait()
    assert (wd / "last_checkpoint").exists(), "the run wrote no checkpoint before it was killed"
    assert not res.exists() or not list(res.rglob("*.json"))  # nothing half written
    done = max(int(p.stem.split("_")[1]) for p in wd.glob("epoch_*.pth"))
    assert done < 500
    out = subprocess.run(cmd + ["--resume", "--epochs", str(done + 2)], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    # mmengine's log goes to the work dir's console.log (--verbose: the console); the console gets the result
    log = (wd / "console.log").read_text()
    assert "Auto resumed from the latest checkpoint" in log and f"resumed epoch: {done}" in log
    assert "mmengine" not in out.stdout + out.stderr and out.stdout.startswith("classification fp32: top1 = ")
    (f,) = res.rglob("*.json")
    rec = json.loads(f.read_text())
    assert rec["epochs"] == done + 2
    # the epochs before the kill reach the record through the checkpoint
    assert [h["epoch"] for h in rec["history"]["train"]] == list(range(1, done + 3))
    assert all(h["loss"] > 0 for h in rec["history"]["train"])


def test_history_is_the_mean_of_each_loss_term_per_epoch():
    """ResumableRunState's history against hand-computed means; non-loss outputs stay out; a
    checkpoint carries it to a resumed run."""
    from types import SimpleNamespace

    from bench.hooks import ResumableRunState
    h, runner = ResumableRunState(seed=0), SimpleNamespace(epoch=0, _resume=True)
    h.before_train_epoch(runner)
    for loss, term in ((1.0, 0.5), (3.0, 1.5)):
        h.after_train_iter(runner, 0, outputs={"loss": torch.tensor(loss), "loss_cls": term, "acc": 9.0})
    h.after_train_epoch(runner)  # mmengine: epoch still 0 here, counted as done after the hooks
    runner.epoch = 1  # validation runs after the count
    h.after_val_epoch(runner, {"top1": 0.25, "per_class": [0.1, 0.2]})
    assert h.history == {"train": [{"epoch": 1, "loss": 2.0, "loss_cls": 1.0}], "val": [{"epoch": 1, "top1": 0.25}]}
    ckpt = {}
    h.before_save_checkpoint(runner, ckpt)
    resumed = ResumableRunState(seed=0)
    resumed.after_load_checkpoint(runner, ckpt)
    assert resumed.history == h.history


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("bench: error:"), err
    return err[-1]


@pytest.mark.parametrize("args,msg", [
    (["--task", "segmentatio"], "invalid choice"),
    (["--backbone", "resnet"], "unknown backbone 'resnet'"),
    (["--variant", "nope"], "invalid choice: 'nope'"),
    (["--schedule", "forever"], "unknown schedule 'forever'"),
    (["--epochs", "0"], "expected a whole number >= 1"),
    (["--seed", "-1"], "expected a whole number >= 0"),
    (["--width", "nan"], "--width must be a number in (0, 16]"),
    (["--width", "0"], "--width must be a number in (0, 16]"),
    (["--model", "retinanet"], "--model is not an option of task classification"),
])
def test_bad_options_one_clear_line(tmp_path, capsys, args, msg):
    argv = ["run", "--task", "classification", "--results-dir", str(tmp_path / "res")]
    if args[0] in ("--task", "--variant", "--epochs", "--seed", "--model"):  # refused by the parser itself
        with pytest.raises(SystemExit) as e:
            main((["run"] if args[0] == "--task" else argv) + args)
        assert e.value.code == 2 and msg in capsys.readouterr().err
        return
    assert main(argv + args) == 2
    assert msg in _err(capsys)
    assert not (tmp_path / "res").exists()


def _broken(tmp_path, cifar_root, kind):
    d = tmp_path / kind
    shutil.copytree(cifar_root, d)
    if kind == "missing":
        return tmp_path / "does-not-exist"
    if kind == "empty":
        shutil.rmtree(d)
        d.mkdir()
    elif kind == "empty-class":
        for f in (d / "train" / "cat").iterdir():
            f.unlink()
    elif kind == "unreadable":
        (d / "train" / "cat" / "0000.jpg").write_bytes(b"not a jpeg")
    return d


@pytest.mark.parametrize("kind,msg", [
    ("missing", "data directory not found"),
    ("empty", "expected subfolders train/ and test/"),
    ("empty-class", "class folder has no images"),
    ("unreadable", "cannot read image"),
])
def test_bad_data_one_clear_line(tmp_path, capsys, cifar_root, kind, msg):
    root = _broken(tmp_path, cifar_root, kind)
    assert _run(tmp_path, "--data", str(root), *TINY) == 2
    line = _err(capsys)
    assert msg in line
    assert str(root) in line or kind in ("empty-class", "unreadable")
    if kind == "unreadable":  # found by the loader, after the runner was built: what it made is removed
        assert "0000.jpg" in line
    assert not list((tmp_path / "res").rglob("*.json")) and not (tmp_path / "wd").exists()


def test_results_dir_not_writable(tmp_path, capsys, cifar_root):
    blocker = tmp_path / "res"
    blocker.write_text("a file where the results folder should be")
    assert _run(tmp_path, "--data", str(cifar_root), *TINY) == 2
    assert "not writable" in _err(capsys)
    assert not (tmp_path / "wd").exists()  # failed before any training


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, cifar_root, monkeypatch):
    import tasks.classification as cls
    calls = {"n": 0}
    real = cls.F.cross_entropy

    def nan_after_first_epoch(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] > 4 else loss  # 120 images / batch 32 = 4 iters/epoch

    monkeypatch.setattr(cls.F, "cross_entropy", nan_after_first_epoch)
    assert _run(tmp_path, "--backbone", "fp32", "--data", str(cifar_root), "--epochs", "3", *TINY) == 2
    line = _err(capsys)
    assert "loss became nan" in line and "epoch 2" in line
    assert (tmp_path / "wd" / "epoch_1.pth").exists()
    ckpt = torch.load(tmp_path / "wd" / "epoch_1.pth", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not list((tmp_path / "res").rglob("*.json"))


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "r.json"
    results.atomic_write(p, "old")

    class Boom(str):
        def encode(self):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        results.atomic_write(p, Boom("new"))
    assert p.read_text() == "old" and [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_cli_help_for_every_command(capsys):
    for cmd in ("run", "compare", "ablate", "eval", "report", "cost", "deploy", "list"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: bench " + cmd in capsys.readouterr().out
    # eval takes the checkpoint's own task options: a task flag gets that answer, not the task's option list
    with pytest.raises(SystemExit):
        main(["eval", "--task", "super_resolution", "--checkpoint", "c.pth", "--data", "d", "--scale", "2"])
    err = capsys.readouterr().err
    assert "--scale is not an option of bench eval" in err and "bench_run.json" in err and "options:" not in err
    # the top-level parser loads no torch and runs no git (`bench --help` stays instant)
    code = ("import subprocess, sys; subprocess.run = subprocess.Popen = None; import bench.cli; "
            "bench.cli.build_parser(); assert not {'torch', 'mmengine'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_cost_command_prints_totals(capsys):
    assert main(["cost", "--backbone", "binealnet", "--input", "1x3x32x32", "--stem", "cifar"]) == 0
    out = capsys.readouterr().out
    assert "OPs" in out and "1/1" in out


def test_eval_checkpoint_on_other_data(tmp_path, cifar_root):
    assert _run(tmp_path, "--backbone", "fp32", "--data", str(cifar_root), *TINY) == 0
    other = tmp_path / "other"
    shutil.copytree(cifar_root, other)
    assert main(["eval", "--task", "classification", "--checkpoint", str(tmp_path / "wd" / "epoch_1.pth"),
                 "--data", str(other), "--results-dir", str(tmp_path / "res")]) == 0
    recs = {r["data"]["name"]: r for r in results.load_records(tmp_path / "res")}
    assert set(recs) == {cifar_root.name, "other"}
    # same images, same weights: same accuracy
    assert recs["other"]["metric"]["value"] == recs[cifar_root.name]["metric"]["value"]


def test_ablate_prints_seed_accuracies_beside_measured(tmp_path, capsys, cifar_root):
    assert main(["ablate", "--task", "classification", "--variants", "binary,fp32", "--data", str(cifar_root),
                 "--results-dir", str(tmp_path / "res"), *TINY]) == 0
    out = capsys.readouterr().out
    assert "seed (400 ep)" in out and "0.9112" in out and "0.9479" in out
    recs = results.load_records(tmp_path / "res")
    assert sorted(r["variant"] for r in recs) == ["binary", "fp32"]
    assert {r["seed_reported"] for r in recs} == {0.9112, 0.9479}
    assert "| binealnet | fp32 |" in (tmp_path / "res" / "classification.md").read_text()


def test_cost_command_for_a_whole_detector(capsys):
    assert main(["cost", "--task", "detection", "--backbone", "binealnet", "--schedule", "smoke"]) == 0
    out = capsys.readouterr().out
    assert all(part in out for part in ("backbone", "neck", "head")) and "1/1" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_one_clear_line(tmp_path, capsys):
    assert _run(tmp_path, "--device", "cuda") == 2
    assert "no CUDA device" in _err(capsys)


def test_cuda_config_uses_bf16_amp(tmp_path):
    import tasks
    cls = tasks.get("classification")
    cfg = cls.build_config("binealnet", cls.DEFAULT_DATA, "gpu", tmp_path, 0, device="cuda")
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
    assert cfg.train_dataloader.dataset.per_class is None and cfg.train_cfg.max_epochs == 12
    cpu = cls.build_config("binealnet", cls.DEFAULT_DATA, "paper", tmp_path, 0, variant="binary-ds3-clip-lr0.1")
    assert cpu.optim_wrapper.type == "OptimWrapper"
    assert cpu.param_scheduler[0].type == "CosineRestartLR" and sum(cpu.param_scheduler[0].periods) == 400
    assert cpu.optim_wrapper.paramwise_cfg.aux_lr_mult == 0.1


def test_commit_given_by_the_launcher_wins_over_the_copy_s_git(monkeypatch):
    import re

    import bench.provenance
    monkeypatch.delenv("BENCH_COMMIT", raising=False)
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", bench.provenance.commit.__wrapped__())
    monkeypatch.setenv("BENCH_COMMIT", "9a34790")
    assert bench.provenance.commit.__wrapped__() == "9a34790"


def test_two_runs_never_share_mmengine_logger_or_visualizer():
    """mmengine names both after the experiment (by default the start second): a run started in the
    same second as one whose work dir is gone would write its config into that removed dir."""
    from mmengine.config import Config

    from bench.runner import prepare_cfg
    a, b = (prepare_cfg(Config(dict(work_dir="w"))) for _ in range(2))
    assert a.experiment_name != b.experiment_name
