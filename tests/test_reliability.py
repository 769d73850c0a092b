"""Hostile input around checkpoints and work dirs: damaged checkpoints, strict eval, locks, atomic saves."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import tasks
from bench import runner
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
    assert runner._verified_last_checkpoint(tmp_path) == tmp_path / "epoch_1.pth"
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "epoch_1.pth")
    assert "epoch_2.pth is damaged" in capsys.readouterr().err
    (tmp_path / "epoch_1.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="no earlier checkpoint"):
        runner._verified_last_checkpoint(tmp_path)


def test_checkpoint_saves_are_atomic(tmp_path, monkeypatch):
    import backbones.openmmlab  # noqa: F401  (makes mmengine's local put atomic)
    from mmengine.runner.checkpoint import save_checkpoint
    target = tmp_path / "epoch_1.pth"
    save_checkpoint({"state_dict": {"w": torch.ones(3)}}, str(target))
    before = target.read_bytes()

    def fail(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, str(target))
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["epoch_1.pth"]


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
        (d / f).write_bytes(pickle.dumps(obj))
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
    ("zero-byte", "empty image file"),
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
    elif kind == "zero-byte":
        (root / "images" / d["images"][0]["file_name"]).write_bytes(b"")
    else:
        d["images"][0]["width"] = d["images"][0]["height"] = 14000
    ann.write_text(json.dumps(d))
    with pytest.raises(tasks.DataError, match=msg):
        det.validate_data(root)
