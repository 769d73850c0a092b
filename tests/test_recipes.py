"""Recipes: parameter groups, lr scaling, two stages, INT8 from FP32 (PTQ), distillation, bad input."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import backbones
import tasks
from backbones.quantizers import BinaryWeightQuantizer, Int8Quantizer
from bench import results
from bench.cli import main
from tasks import recipes

TINY = ["--width", "0.25"]


@pytest.fixture(scope="module")
def cifar_root(cifar_subset):
    """8 train / 4 test real CIFAR-10 images per class (smaller than conftest's: many runs here)."""
    return cifar_subset(8, 4)


def test_groups_by_parameter_kind():
    from mmengine.optim import build_optim_wrapper
    m = nn.Sequential(backbones.build("binealnet", width=0.25, stem="cifar"))
    r = recipes.get("reactnet")
    opt = build_optim_wrapper(m, recipes.optim_wrapper("cpu", dict(type="Adam", lr=1e-3, weight_decay=0.5), 1.0,
                                                        binary_latent_decay=r.binary_latent_decay)).optimizer
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    stem_w = m[0].stem[0].weight
    latent = m[0].stages[1][0].conv1.weight
    beta = m[0].stages[1][0].conv1.weight_quantizer.beta
    bn = m[0].stages[1][0].bn1.weight
    assert isinstance(m[0].stages[1][0].conv1.weight_quantizer, BinaryWeightQuantizer)
    assert (decay[id(stem_w)], decay[id(latent)], decay[id(beta)], decay[id(bn)]) == (0.5, 1e-5, 0.0, 0.0)


def test_backbone_lr_mult_scales_the_backbone_groups_alone():
    from mmengine.optim import build_optim_wrapper
    m = nn.Module()
    m.backbone, m.head = backbones.build("binealnet", width=0.25, stem="cifar"), nn.Linear(8, 2)
    cfg = recipes.optim_wrapper("cpu", dict(type="Adam", lr=1e-3), aux_lr_mult=0.5)
    cfg["paramwise_cfg"]["backbone_lr_mult"] = 0.1
    opt = build_optim_wrapper(m, cfg).optimizer
    lr = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    conv = m.backbone.stages[1][0].conv1
    assert lr[id(conv.weight)] == pytest.approx(1e-4)                   # latent weight: 1e-3 x 0.1
    assert lr[id(conv.weight_quantizer.beta)] == pytest.approx(5e-5)    # quantizer: x 0.1 x aux 0.5
    assert lr[id(m.backbone.stem[0].weight)] == pytest.approx(1e-4)
    assert lr[id(m.head.weight)] == lr[id(m.head.bias)] == pytest.approx(1e-3)  # outside the backbone


def test_lr_scales_with_batch_linearly_for_sgd_by_square_root_for_adam_and_schedule_is_kept(tmp_path):
    cls = tasks.get("classification")
    cfg = cls.build_config("int8", cls.DEFAULT_DATA, "short", tmp_path, 0)  # batch 64, 4 epochs
    recipes.apply(cfg, recipes.get("adamw"), "cpu")
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(2e-3 * (64 / 256) ** 0.5)  # Adam: square root
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.train_cfg.max_epochs == 4
    assert [s["type"] for s in cfg.param_scheduler] == ["LinearLR", "CosineAnnealingLR"]
    assert cfg.param_scheduler[1]["begin"] == 1 and cfg.bench.recipe["name"] == "adamw"
    recipes.apply(cfg, recipes.get("sgd"), "cpu")
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.1 * 64 / 128)  # SGD: linear


def test_sgd_warmup_is_sgd_plus_a_warm_up(tmp_path):
    cls = tasks.get("classification")
    scheds = {}
    for name in ("sgd", "sgd-warmup"):
        cfg = cls.build_config("binealnet", cls.DEFAULT_DATA, "gpu", tmp_path, 0, variant="binary-activations")
        recipes.apply(cfg, recipes.get(name), "cpu")
        scheds[name] = cfg.param_scheduler
        assert cfg.optim_wrapper.optimizer.type == "SGD" and cfg.optim_wrapper.optimizer.lr == pytest.approx(0.2)
    assert [s["type"] for s in scheds["sgd"]] == ["CosineAnnealingLR"]
    assert [s["type"] for s in scheds["sgd-warmup"]] == ["LinearLR", "CosineAnnealingLR"]
    assert scheds["sgd-warmup"][0]["start_factor"] == pytest.approx(1e-3) and scheds["sgd-warmup"][1]["begin"] == 1


def test_two_stage_switches_binary_weights_and_resets_beta():
    recipes._register()
    from mmengine.registry import HOOKS
    hook = HOOKS.build(dict(type="TwoStageBinaryHook", switch_epoch=2))
    model = backbones.build("binealnet", width=0.25, stem="cifar")
    runner = type("R", (), {"model": model, "epoch": 0})()
    hook.before_train_epoch(runner)
    wqs = [m.weight_quantizer for m in model.modules() if isinstance(getattr(m, "weight_quantizer", None),
                                                                      BinaryWeightQuantizer)]
    conv = model.stages[1][0].conv1
    x = torch.randn(2, conv.in_channels, 6, 6)
    assert all(q.bits == 32 for q in wqs)  # stage 1: float weights, binary activations
    a = conv.act_quantizer(x)
    padded = nn.functional.pad(a, (1,) * 4, value=-conv.act_quantizer.gamma.item())  # -1 units, times gamma
    torch.testing.assert_close(conv(x), nn.functional.conv2d(padded, conv.weight, None, conv.stride))
    with torch.no_grad():
        conv.weight.mul_(3)  # stage 1 trained the latent weights
    runner.epoch = 2
    hook.before_train_epoch(runner)
    assert all(q.bits == 1 for q in wqs)
    torch.testing.assert_close(conv.weight_quantizer.beta.flatten(), conv.weight.abs().mean(dim=(1, 2, 3)))
    # the stage is saved with the model (a resumed run is in its stage)
    state = model.state_dict()
    fresh = backbones.build("binealnet", width=0.25, stem="cifar")
    for q in fresh.modules():
        if isinstance(q, BinaryWeightQuantizer):
            q.set_active(False)
    fresh.load_state_dict(state)
    assert all(q.bits == 1 for q in fresh.modules() if isinstance(q, BinaryWeightQuantizer))


def test_ptq_calibration_tracks_the_float_model():
    """INT8 from FP32: same weights, activation scales observed on a few batches: the INT8 network's
    features stay close to the float network's (and far closer than uncalibrated scales)."""
    torch.manual_seed(0)
    fp = backbones.build("fp32", width=0.25, stem="cifar", out_indices=(3,))
    fp.train()(torch.randn(16, 3, 32, 32))  # BN statistics that are not the identity
    q = backbones.build("int8", width=0.25, stem="cifar", out_indices=(3,))
    missing = q.load_state_dict(fp.state_dict(), strict=False)
    assert not missing.unexpected_keys and all("quantizer" in k for k in missing.missing_keys)

    class Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, mode="tensor"):
            return self.m(x)
    n, seen = recipes.calibrate_int8(Wrap(q), ({"inputs": torch.randn(8, 3, 32, 32)} for _ in range(10)), 4)
    assert n == sum(isinstance(m, Int8Quantizer) for m in q.modules()) and seen == 4
    x = torch.randn(4, 3, 32, 32)
    fp.eval()
    with torch.no_grad():
        ref, got = fp(x)[0], q(x)[0]
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < 0.1, rel
    assert all(bool(m.observed) for m in q.modules() if isinstance(m, Int8Quantizer) and not m.per_channel)


def test_compare_trains_the_teacher_first_and_reports_from_records(tmp_path, cifar_root, capsys):
    """`bench compare` with binealnet's default (distilling) recipe and INT8 by PTQ: the fp32 teacher
    is trained first and handed on; the tables are rebuilt from the records alone."""
    res = tmp_path / "res"
    assert tasks.get("classification").DEFAULT_RECIPES["binealnet"] == "adamw-kd"
    assert main(["compare", "--task", "classification", "--data", str(cifar_root), "--results-dir", str(res),
                 "--backbones", "binealnet,int8,fp32", "--recipe", "int8=ptq", *TINY]) == 0
    out = capsys.readouterr().out
    assert out.index("classification fp32") < out.index("classification binealnet")  # teacher first
    recs = {r["backbone"]: r for r in results.load_records(res, "classification")}
    assert recs["binealnet"]["recipe"]["name"] == "adamw-kd" and recs["binealnet"]["recipe"]["distill"]
    assert recs["binealnet"]["teacher"]["run"]["backbone"] == "fp32" and recs["binealnet"]["teacher"]["wall_s"] > 0
    assert recs["int8"]["recipe"]["name"] == "ptq" and recs["int8"]["epochs"] == 0
    assert recs["fp32"]["recipe"]["name"] == tasks.get("classification").DEFAULT_RECIPES["fp32"]
    md = (res / "classification.md").read_text()
    assert "recipe=adamw-kd" in md and "| int8 |" in md and "OPs (M)" in md
    assert (res / "classification.png").stat().st_size > 1000
    overview = (res / "classification.md").read_text()
    ratio = recs["binealnet"]["cost"]["ops"] / recs["int8"]["cost"]["ops"]
    assert f"| {ratio:.3f} |" in overview  # the untrained PTQ row sits in the trained rows' group
    # report again from the records alone: the same table
    (res / "classification.md").unlink()
    assert main(["report", "--results-dir", str(res)]) == 0
    assert (res / "classification.md").read_text() == md


@pytest.mark.parametrize("args,msg", [
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--backbone", "binealnet", "--recipe", "ptq", "--teacher", "x.pth"], "use it with --backbone int8"),
    (["--backbone", "int8", "--recipe", "qat"], "needs --teacher CKPT"),
    (["--backbone", "fp32", "--recipe", "two-stage"], "use it with a binary backbone"),
    (["--backbone", "binealnet", "--recipe", "adamw-kd", "--teacher", "missing.pth"], "checkpoint not found"),
    (["--backbone", "binealnet", "--recipe", "task-default", "--teacher", "x.pth"], "does not use a teacher"),
])
def test_bad_recipe_input_one_clear_line(tmp_path, capsys, args, msg):
    res = tmp_path / "res"
    assert main(["run", "--task", "classification", "--results-dir", str(res), *args]) == 2
    assert msg in capsys.readouterr().err and not res.exists()


def test_task_default_is_a_recipe_name_that_overrides_a_tasks_default(tmp_path, cifar_root):
    """--recipe task-default trains with the task's own optimizer even where the task has a default
    recipe for the backbone, and the record's command reproduces that."""
    task = tasks.get("classification")
    assert task.DEFAULT_RECIPES["binealnet"] == "adamw-kd"
    res = tmp_path / "res"
    assert main(["run", "--task", "classification", "--backbone", "binealnet", "--recipe", "task-default",
                 "--data", str(cifar_root), "--results-dir", str(res), "--work-dir", str(tmp_path / "w"), *TINY]) == 0
    (rec,) = results.load_records(res, "classification")
    own = task.build_config("binealnet", cifar_root, "smoke", tmp_path / "x", 0).optim_wrapper.optimizer
    assert rec["recipe"]["name"] == "task-default" and rec["recipe"]["optimizer"]["type"] == own["type"] == "SGD"
    assert "--recipe task-default" in rec["command"]


def test_teacher_of_another_task_or_width_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "t" / "epoch_1.pth"
    ckpt.parent.mkdir()
    torch.save({"state_dict": {}}, ckpt)
    meta = dict(task="detection", backbone="fp32", variant=None, task_options={}, seed=0)
    (ckpt.parent / "bench_run.json").write_text(json.dumps(meta))
    argv = ["run", "--task", "classification", "--backbone", "binealnet", "--recipe", "adamw-kd", "--teacher",
            str(ckpt), "--results-dir", str(tmp_path / "res")]
    assert main(argv) == 2 and "is a detection run, not classification" in capsys.readouterr().err
    meta.update(task="classification", task_options={"width": 0.5})
    (ckpt.parent / "bench_run.json").write_text(json.dumps(meta))
    assert main(["run", "--task", "classification", "--backbone", "int8", "--recipe", "qat", "--teacher", str(ckpt),
                 "--results-dir", str(tmp_path / "res"), *TINY]) == 2
    assert "does not fit this model" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_takes_every_training_recipe(name, tmp_path):
    """One recipe layer for all tasks: each task's smoke config accepts the recipes (no per-task copy)."""
    task = tasks.get(name)
    opts = task.options_with_defaults({"width": 0.25} if "width" in task.OPTIONS else {})
    for r in ("sgd", "adamw", "two-stage"):
        cfg = task.build_config("binealnet", task.DEFAULT_DATA, "smoke", tmp_path, 0, **opts)
        recipes.apply(cfg, recipes.get(r), "cpu")
        assert cfg.optim_wrapper.optimizer.type == recipes.get(r).optimizer
        assert cfg.optim_wrapper.optimizer.lr == pytest.approx(recipes.get(r).lr_for(cfg.train_dataloader.batch_size))
        assert cfg.bench.recipe["name"] == r


# ---------------------------------------------------------------- output-level distillation (dense tasks)
def test_dense_kd_losses_against_independent_formulas():
    import torch.nn.functional as F

    from tasks.recipes import dense_kd_loss
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    assert dense_kd_loss("kl", t, t) == pytest.approx(0.0, abs=1e-7)
    # per pixel KL(t || s) over the 5 classes, averaged over the 2*3*4 pixels
    ls, lt = F.log_softmax(s, 1).permute(0, 2, 3, 1).reshape(-1, 5), F.log_softmax(t, 1).permute(0, 2, 3, 1).reshape(-1, 5)
    want = F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    assert dense_kd_loss("kl", s, t).item() == pytest.approx(want.item(), rel=1e-6)
    assert dense_kd_loss("kl", s, t, temperature=2.0).item() == pytest.approx(
        4 * F.kl_div(F.log_softmax(s / 2, 1).permute(0, 2, 3, 1).reshape(-1, 5),
                     F.log_softmax(t / 2, 1).permute(0, 2, 3, 1).reshape(-1, 5),
                     log_target=True, reduction="batchmean").item(), rel=1e-6)
    assert dense_kd_loss("l1", s, t).item() == pytest.approx((s - t).abs().mean().item(), rel=1e-6)
    q = torch.sigmoid(t)  # bce: -(q log sigmoid(s) + (1 - q) log(1 - sigmoid(s))), averaged
    want = -(q * torch.log(torch.sigmoid(s)) + (1 - q) * torch.log(1 - torch.sigmoid(s))).mean()
    assert dense_kd_loss("bce", s, t).item() == pytest.approx(want.item(), rel=1e-5)


def test_output_distilled_sr_model_pulls_towards_the_teacher(tmp_path):
    from mmengine.registry import MODELS

    from tasks import recipes
    recipes._register()
    sr = tasks.get("super_resolution")
    cfg = sr.build_config("fp32", sr.DEFAULT_DATA, "smoke", tmp_path, 0)
    teacher = MODELS.build(cfg.model)
    torch.save({"state_dict": teacher.state_dict(), "meta": {}}, tmp_path / "t.pth")
    sr.add_teacher(cfg, cfg.model.copy(), str(tmp_path / "t.pth"))
    student = MODELS.build(cfg.model)
    assert set(student.state_dict()) == set(teacher.state_dict())  # the teacher is not saved with it
    student.load_state_dict(teacher.state_dict())
    lr, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 48, 48)
    assert student(lr, hr, mode="loss")["loss_kd"].item() == 0.0  # same weights: nothing to learn
    with torch.no_grad():
        student.head[0].weight.add_(0.1)
    got = student(lr, hr, mode="loss")
    want = (student(lr, mode="tensor") - teacher(lr, mode="tensor")).abs().mean()  # anchors cancel
    assert got["loss_kd"].item() == pytest.approx(want.item(), rel=1e-5)
    assert got["loss"].item() == pytest.approx((student(lr, mode="tensor") - hr).abs().mean().item(), rel=1e-5)


@pytest.mark.parametrize("task_name", ["segmentation", "super_resolution", "detection"])
def test_dense_task_trains_with_a_distilling_recipe(tmp_path, task_name):
    from bench.cli import main
    extra = ["--model", "fpn", "--width", "0.25"] if task_name == "segmentation" else ["--width", "0.25"]
    common_args = ["run", "--task", task_name, "--results-dir", str(tmp_path / "res"), *extra]
    assert main(common_args + ["--backbone", "fp32", "--work-dir", str(tmp_path / "t")]) == 0
    teacher = (tmp_path / "t" / "last_checkpoint").read_text().strip()
    assert main(common_args + ["--backbone", "binealnet", "--recipe", "adamw-kd", "--teacher", teacher,
                               "--work-dir", str(tmp_path / "s")]) == 0
    (f,) = (tmp_path / "res" / task_name).glob("binealnet*.json")
    rec = json.loads(f.read_text())
    assert rec["recipe"]["name"] == "adamw-kd" and Path(rec["teacher"]["checkpoint"]).name == Path(teacher).name
    # the teacher enters the record and the run's name as the hash of its run, never as its path
    from bench.records import dependency_hash
    run_id = dependency_hash(json.loads((tmp_path / "t" / "bench_run.json").read_text()))
    assert rec["teacher"]["run_id"] == run_id and f"teacher-{run_id}" in f.stem and str(tmp_path) not in f.read_text()
    assert rec["config"]["model"]["type"] == "OutputDistilled"
    assert {"segmentation": "KL", "super_resolution": "L1", "detection": "heatmap"}[task_name] in \
        rec["config"]["bench"]["distillation"]
    log = next((tmp_path / "s").rglob("*.log")).read_text()
    assert "loss_kd" in log


def test_retinanet_has_no_distillation(tmp_path, capsys):
    from bench.cli import main
    base = ["run", "--task", "detection", "--model", "retinanet", "--width", "0.25", "--results-dir", str(tmp_path / "r")]
    teacher = tmp_path / "t" / "epoch_1.pth"  # an fp32 detection run of ours (untrained: refused before use)
    teacher.parent.mkdir()
    torch.save({"state_dict": {}, "meta": {}}, teacher)
    (teacher.parent / "bench_run.json").write_text(json.dumps(dict(task="detection", backbone="fp32", variant=None,
                                                                   seed=0, task_options={"model": "retinanet"})))
    assert main(base + ["--backbone", "binealnet", "--recipe", "adamw-kd", "--teacher", str(teacher),
                        "--work-dir", str(tmp_path / "s")]) == 2
    assert "distillation is defined for CenterNet" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_compare_over_seeds_distils_each_seed_from_its_own_teacher(tmp_path, monkeypatch):
    """`bench compare --seeds 0,1` is the whole comparison once per seed: each seed's binary run distils
    from that seed's fp32 run, and the tables add a mean row over the seeds. The runs are stand-ins
    recording what they were given: a real distilling compare is the test above."""
    from bench import runner
    calls = []

    def fake_run(task, backbone, seed=0, teacher=None, results_dir=None, **kw):
        calls.append((backbone, seed, teacher))
        wd = tmp_path / f"{backbone}-{seed}"
        wd.mkdir()
        (wd / "last_checkpoint").write_text(f"fp32-seed{seed}.pth")
        rec = {"run": f"{backbone}_s{seed}", "task": task, "backbone": backbone, "variant": None, "seed": seed,
               "metric": {"name": "top1", "value": 0.5 + 0.1 * seed, "higher_is_better": True},
               "cost": {"ops": 1e6, "bops": 0, "macs": 1, "macs_by_bits": {}, "params": 1, "size_bits": 8},
               "schedule": "smoke", "epochs": 1, "data": {"name": "d", "path": "d"}, "config": {"work_dir": str(wd)},
               "recipe": {"name": "adamw-kd" if backbone == "binealnet" else "adamw"}, "commit": "c",
               "versions": {}, "device": "cpu", "wall_s": 1.0}
        return rec, results.write_record(rec, results_dir)

    monkeypatch.setattr(runner, "run", fake_run)
    res = tmp_path / "res"
    assert main(["compare", "--task", "classification", "--results-dir", str(res), "--backbones", "binealnet,fp32",
                 "--seeds", "0,1", *TINY]) == 0
    assert calls == [("fp32", 0, None), ("binealnet", 0, "fp32-seed0.pth"), ("fp32", 1, None),
                     ("binealnet", 1, "fp32-seed1.pth")]
    assert "mean of seeds 0, 1" in (res / "classification.md").read_text()


@pytest.mark.parametrize("args,msg", [(["--seeds", "0,0"], "a seed is listed twice"),
                                      (["--seeds", "0,-1"], "expected a whole number >= 0"),
                                      (["--seeds", "1,2", "--seed", "1"], "give --seed or --seeds, not both")])
def test_bad_seed_lists_are_refused(tmp_path, capsys, args, msg):
    res = tmp_path / "res"
    try:
        code = main(["compare", "--task", "classification", "--results-dir", str(res), *args])
    except SystemExit as e:  # argparse's own refusal
        code = e.code
    assert code == 2 and msg in capsys.readouterr().err and not res.exists()
