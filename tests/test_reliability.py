"""Hostile input around checkpoints and work dirs: damaged checkpoints, strict eval, locks, atomic saves."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import tasks
from bench import rundir, runner
from bench.cli import main
from tasks.base import BenchError

REPO = Path(__file__).resolve().parent.parent


def _ckpt(path, marker):
    torch.save({"state_dict": {"w": torch.tensor([marker])}, "meta": {}}, path)


def test_resume_falls_back_from_a_truncated_last_checkpoint(tmp_path, capsys):
    _ckpt(tmp_path / "epoch_1.pth", 1.0)
    _ckpt(tmp_path / "epoch_2.pth", 2.0)
    data = (tmp_path / "epoch_2.pth").read_bytes()
    (tmp_path / "epoch_2.pth").write_bytes(data[: len(data) // 2])  # cut short while saving
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "epoch_2.pth"))
    assert rundir.resumable_checkpoint(tmp_path) == tmp_path / "epoch_1.pth"
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "epoch_1.pth")
    assert "epoch_2.pth is damaged" in capsys.readouterr().err
    (tmp_path / "epoch_1.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="no earlier checkpoint"):
        rundir.resumable_checkpoint(tmp_path)


def test_checkpoint_saves_are_atomic(tmp_path, monkeypatch):
    import backbones.openmmlab  # noqa: F401  (makes mmengine's local put atomic)
    from mmengine.runner.checkpoint import save_checkpoint
    target = tmp_path / "epoch_1.pth"
    save_checkpoint({"state_dict": {"w": torch.ones(3)}}, str(target))
    before = target.read_bytes()

    def fail(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(BenchError, match=f"^{tmp_path}: disk full while writing epoch_2.pth; the files already there "
                                         "are kept"):
        save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, str(tmp_path / "epoch_2.pth"))
    (tmp_path / "last_checkpoint").write_text(str(target))  # as mmengine's CheckpointHook leaves it
    with pytest.raises(BenchError, match=f"; the last good checkpoint is kept: {target} \\(free some space, then "
                                         "rerun with --resume\\)$"):
        save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, str(target))
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pth",
                                                                                           "last_checkpoint"]


def _cls_checkpoint(tmp_path, data_root):
    """A classification checkpoint of ours without training: the model's own initial weights."""
    import backbones.openmmlab  # noqa: F401
    from mmengine.registry import MODELS
    cls = tasks.get("classification")
    cfg = cls.build_config("fp32", data_root, "smoke", tmp_path, 0, width=0.25)
    model = MODELS.build(cfg.model)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"state_dict": model.state_dict(), "meta": {}}, run / "epoch_1.pth")
    (run / "bench_run.json").write_text(json.dumps(dict(
        task="classification", backbone="fp32", variant=None, data=str(data_root), schedule="smoke", epochs=None,
        seed=0, task_options={"width": 0.25})))
    return run / "epoch_1.pth"


def test_eval_refuses_a_checkpoint_that_does_not_fit(tmp_path, capsys):
    sample = REPO / "data" / "cifar10-sample"
    ckpt = _cls_checkpoint(tmp_path, sample)  # 10 classes
    two = tmp_path / "two-classes"
    for split in ("train", "test"):
        for c in sorted((sample / split).iterdir())[:2]:
            shutil.copytree(c, two / split / c.name)
    assert main(["eval", "--task", "classification", "--checkpoint", str(ckpt), "--data", str(two),
                 "--results-dir", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "head.weight" in err and not (tmp_path / "res").exists()
    assert not (ckpt.parent / "eval_two-classes").exists()  # the failed eval leaves no log folder behind
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["eval", "--task", "classification", "--checkpoint", str(ckpt), "--data", str(sample),
                 "--results-dir", str(tmp_path / "res")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    (ckpt.parent / "bench_run.json").write_text("{broken")
    assert main(["eval", "--task", "classification", "--checkpoint", str(ckpt), "--data", str(sample)]) == 2
    assert "bench_run.json: missing or unreadable" in capsys.readouterr().err


def test_one_run_per_work_dir(tmp_path):
    held = runner._lock(tmp_path)
    with pytest.raises(BenchError, match="another bench run is using this work dir"):
        runner._lock(tmp_path)
    held.close()
    runner._lock(tmp_path).close()  # free again once the first run ends


# ---------------------------------------------------------------- hostile data: CIFAR batches and COCO json
def _batches(tmp_path, labels=None, meta=None, payload=None):
    import pickle

    import numpy as np
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = payload if payload is not None else {b"data": np.zeros((2, 3072), np.uint8),
                                                     b"labels": labels or [0, 1]}
        (d / f).write_bytes(pickle.dumps(obj, protocol=2))  # as CIFAR-10's own files (Python 2's cPickle)
    if meta is not None:
        (d / "batches.meta").write_bytes(meta)
    return tmp_path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/bench-pwned",))


@pytest.mark.parametrize("kind,msg", [
    ("label", "label 10 at index 1 is outside 0-9"),
    ("pickle-code", "refused to load"),
    ("meta", "batches.meta"),
])
def test_hostile_cifar_batches(tmp_path, kind, msg):
    from tasks import classification as cls
    if kind == "label":
        root = _batches(tmp_path, labels=[3, 10])
    elif kind == "pickle-code":
        root = _batches(tmp_path, payload=_Evil())
    else:
        root = _batches(tmp_path, meta=b"\x80\x04garbage")
    with pytest.raises(tasks.DataError, match=msg):
        cls.load_split.__wrapped__(str(root), "train" if kind != "meta" else "test")
    assert not Path("/tmp/bench-pwned").exists()


@pytest.mark.parametrize("kind,msg", [
    ("dup-id", "is used by 2 images"),
    ("nan-box", "is not four finite numbers"),
    ("no-annotations", "annotations is empty"),
    ("all-crowd", "every annotation is iscrowd=1"),
    ("truncated-jpeg", r"000.*\.jpg: cannot read image of instances_.*truncated"),
    ("huge", "decompression bomb"),
])
def test_hostile_coco(tmp_path, kind, msg):
    det = tasks.get("detection")
    root = tmp_path / "coco"
    shutil.copytree(det.DEFAULT_DATA, root)
    (ann,) = (root / "annotations").glob("instances_*.json")
    d = json.loads(ann.read_text())
    if kind == "dup-id":
        d["images"][1]["id"] = d["images"][0]["id"]
    elif kind == "nan-box":
        d["annotations"][0]["bbox"] = [float("nan")] * 4
    elif kind == "no-annotations":
        d["annotations"] = []
    elif kind == "all-crowd":
        for a in d["annotations"]:
            a["iscrowd"] = 1
    elif kind == "truncated-jpeg":  # a real JPEG cut short: its header reads, its pixels do not
        jpeg = root / "images" / d["images"][-1]["file_name"]
        jpeg.write_bytes(jpeg.read_bytes()[:2000])
    else:
        d["images"][0]["width"] = d["images"][0]["height"] = 14000
    ann.write_text(json.dumps(d))
    with pytest.raises(tasks.DataError, match=msg):
        det.validate_data(root)


# ---------------------------------------------------------------- resume, free space, multi-process
def _cls_run(tmp_path, data, wd, *args):
    return main(["run", "--task", "classification", "--backbone", "fp32", "--data", str(data), "--width", "0.25",
                 "--work-dir", str(wd), "--results-dir", str(tmp_path / f"res-{wd.name}"), *args])


def _record(tmp_path, wd):
    (f,) = (tmp_path / f"res-{wd.name}" / "classification").glob("*.json")
    return json.loads(f.read_text())


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_resumed_run_equals_uninterrupted_run_and_counts_all_wall_time(tmp_path, cifar_root):
    data = cifar_root
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _cls_run(tmp_path, data, whole, "--epochs", "2") == 0
    # the same run stopped after epoch 1: its work dir as a kill after that checkpoint leaves it
    shutil.copytree(whole, cut)
    (cut / "epoch_2.pth").unlink()
    (cut / "last_checkpoint").write_text(str(cut / "epoch_1.pth"))
    part1 = torch.load(cut / "epoch_1.pth", map_location="cpu", weights_only=False)["meta"]["bench_wall_s_parts"]
    assert _cls_run(tmp_path, data, cut, "--epochs", "2", "--resume") == 0
    a, b = _weights(whole / "epoch_2.pth"), _weights(cut / "epoch_2.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # augmentation included
    rec_whole, rec_cut = _record(tmp_path, whole), _record(tmp_path, cut)
    assert rec_cut["metric"]["value"] == rec_whole["metric"]["value"]
    assert len(rec_whole["wall_s_parts"]) == 1 and len(rec_cut["wall_s_parts"]) == 2
    assert rec_cut["wall_s_parts"][0] == pytest.approx(part1[0])
    assert rec_cut["wall_s"] == pytest.approx(sum(rec_cut["wall_s_parts"]))


def test_too_little_free_space_stops_before_training(tmp_path, capsys, monkeypatch, cifar_root):
    import collections
    data = cifar_root
    wd = tmp_path / "wd"
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - (5 << 20), 5 << 20))
    assert _cls_run(tmp_path, data, wd) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"bench: error: {wd}: 5 MiB free, this run needs about") and "checkpoints" in err
    assert not list(wd.glob("*.pth")) and not list(tmp_path.glob("res-wd/**/*.json"))


def test_augmentation_is_the_same_over_any_process_count(monkeypatch):
    """Rank r of N augments its samples (the sampler deals them round-robin) exactly as one process
    augments the same global batch."""
    from mmengine import dist

    import tasks.classification as cls
    cls._register()
    from mmengine.registry import MODELS
    pre = MODELS.build(dict(type="ClsDataPreprocessor"))
    x = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(8)
    torch.manual_seed(5)
    one = pre({"inputs": x, "data_samples": y}, training=True)["inputs"]
    for rank in range(2):
        monkeypatch.setattr(dist, "get_dist_info", lambda r=rank: (r, 2))
        torch.manual_seed(5)
        part = pre({"inputs": x[rank::2], "data_samples": y[rank::2]}, training=True)["inputs"]
        assert torch.equal(part, one[rank::2])


def test_launcher_without_torchrun_and_batch_that_does_not_split(tmp_path, capsys, monkeypatch, cifar_root):
    data = cifar_root
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert _cls_run(tmp_path, data, tmp_path / "wd", "--launcher", "pytorch") == 2
    assert "start the run with torchrun" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")  # smoke's batch of 32 does not split over 3
    assert _cls_run(tmp_path, data, tmp_path / "wd", "--launcher", "pytorch") == 2
    assert "does not split over 3 processes" in capsys.readouterr().err
    assert not (tmp_path / "wd").exists()


#: two processes vs one at the same global batch: BatchNorm sees half the batch per process, so
#: the runs are close, not equal; on a 60-image test set after 2 smoke epochs we allow 6 images
TWO_PROCESS_TOLERANCE = 0.1


def test_two_processes_with_gloo_on_cpu(tmp_path, cifar_root):
    import subprocess
    import sys
    data = cifar_root
    one, two = tmp_path / "one", tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "bench.cli", "run", "--task", "classification", "--backbone", "fp32", "--data", str(data),
           "--width", "0.25", "--epochs", "2", "--work-dir", str(two), "--results-dir", str(tmp_path / "res-two"),
           "--launcher", "pytorch"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _cls_run(tmp_path, data, one, "--epochs", "2") == 0
    r1, r2 = _record(tmp_path, one), _record(tmp_path, two)
    assert r2["launch"] == {"launcher": "pytorch", "world_size": 2, "batch_per_process": 16}
    assert r1["launch"] == {"launcher": "none", "world_size": 1}
    # the test set was gathered from both processes: a count over all 60 images
    assert round(r2["metric"]["value"] * 60) == pytest.approx(r2["metric"]["value"] * 60, abs=1e-6)
    assert abs(r2["metric"]["value"] - r1["metric"]["value"]) <= TWO_PROCESS_TOLERANCE
    # both processes trained one model: the checkpoint evaluates to the recorded metric
    assert main(["eval", "--task", "classification", "--checkpoint", str(two / "epoch_2.pth"), "--data", str(data),
                 "--results-dir", str(tmp_path / "res-eval")]) == 0
    (f,) = (tmp_path / "res-eval" / "classification").glob("*.json")
    assert json.loads(f.read_text())["metric"]["value"] == r2["metric"]["value"]
