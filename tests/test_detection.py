"""Detection task: COCO json checks, the CocoMetric oracle, configs that build, smoke trainings."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")

import backbones  # noqa: E402
import backbones.openmmlab  # noqa: E402,F401  (mmcv op stand-in before anything from mmdet)
import tasks  # noqa: E402
import tasks.detection as det  # noqa: E402
from bench.errors import DataError  # noqa: E402

DET = tasks.get("detection")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
COCO_MINI = SHARED / "coco-mini"
PENNFUDAN = SHARED / "pennfudan"
# real COCO images for smoke runs: ../shared's coco-mini, else the embedded sample
SMOKE_DATA = COCO_MINI if COCO_MINI.is_dir() else DET.DEFAULT_DATA
SAMPLE_JSON = "annotations/instances_sample.json"


@pytest.fixture(autouse=True)
def _mmdet_scope():
    from mmengine.registry import DefaultScope, init_default_scope
    if DefaultScope.get_current_instance() is None or DefaultScope.get_current_instance().scope_name != "mmdet":
        init_default_scope("mmdet")
    import mmdet.datasets  # noqa: F401  (registers CocoDataset and the transforms)
    import mmdet.evaluation  # noqa: F401
    import mmdet.models  # noqa: F401


def _train_test(cfg):
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, runner.test()


# ---------------------------------------------------------------- data
def test_embedded_sample_validates():
    DET.validate_data(DET.DEFAULT_DATA)
    info = DET.data_info(DET.DEFAULT_DATA)
    assert info["images"] == 8 and len(info["sha256"]) == 64
    assert "single json" in info["layout"]  # train = val: said in the record
    size = sum(f.stat().st_size for f in DET.DEFAULT_DATA.rglob("*") if f.is_file())
    assert size < 2_000_000 and (DET.DEFAULT_DATA / "SOURCE.md").is_file()


@pytest.mark.skipif(not PENNFUDAN.is_dir(), reason="../shared/data/pennfudan not present")
def test_pennfudan_train_val_layout():
    DET.validate_data(PENNFUDAN)
    info = DET.data_info(PENNFUDAN)
    assert info["layout"] == "train/val jsons" and (info["train_images"], info["val_images"]) == (120, 50)
    cfg = DET.build_config("fp32", PENNFUDAN, "short", "/tmp/unused", 0)
    assert cfg.model.bbox_head.num_classes == 1
    assert cfg.train_dataloader.dataset.ann_file == "annotations/instances_train.json"
    assert cfg.test_dataloader.dataset.ann_file == "annotations/instances_val.json"


@pytest.fixture
def sample_copy(tmp_path):
    dst = tmp_path / "coco"
    shutil.copytree(DET.DEFAULT_DATA, dst)
    return dst


def _edit_json(root, fn, name=SAMPLE_JSON):
    path = root / name
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))
    return d


def _raises(root, *needles):
    with pytest.raises(DataError) as e:
        DET.validate_data(root)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    return msg


def test_missing_root(tmp_path):
    _raises(tmp_path / "nope", str(tmp_path / "nope"), "not found")


def test_missing_annotation_file(sample_copy):
    (sample_copy / SAMPLE_JSON).unlink()
    _raises(sample_copy, "annotations", "instances_train")


def test_annotation_not_json(sample_copy):
    (sample_copy / SAMPLE_JSON).write_text("{not json")
    _raises(sample_copy, "instances_sample.json", "not valid JSON")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_json_without_required_key(sample_copy, key):
    _edit_json(sample_copy, lambda d: d.pop(key))
    _raises(sample_copy, "instances_sample.json", key)


def _first_ann(d):
    a = d["annotations"][0]
    im = next(i for i in d["images"] if i["id"] == a["image_id"])
    return a, im


def test_box_outside_image(sample_copy):
    d = json.loads((sample_copy / SAMPLE_JSON).read_text())
    a, im = _first_ann(d)

    def push_out(d):
        d["annotations"][0]["bbox"] = [im["width"] - 5.0, 10.0, 40.0, 20.0]
    _edit_json(sample_copy, push_out)
    _raises(sample_copy, "instances_sample.json", f"annotation id {a['id']}", im["file_name"], "outside")


@pytest.mark.parametrize("wh", [(0.0, 10.0), (10.0, -3.0)])
def test_box_with_non_positive_size(sample_copy, wh):
    d = json.loads((sample_copy / SAMPLE_JSON).read_text())
    a, im = _first_ann(d)
    _edit_json(sample_copy, lambda d: d["annotations"][0].__setitem__("bbox", [5.0, 5.0, *wh]))
    _raises(sample_copy, f"annotation id {a['id']}", im["file_name"], "non-positive")


def test_unknown_category(sample_copy):
    _edit_json(sample_copy, lambda d: d["annotations"][0].__setitem__("category_id", 999))
    _raises(sample_copy, "category_id 999")


def test_image_file_missing(sample_copy):
    d = json.loads((sample_copy / SAMPLE_JSON).read_text())
    name = d["images"][0]["file_name"]
    (sample_copy / "images" / name).unlink()
    _raises(sample_copy, "instances_sample.json", name, "missing")


def test_train_val_categories_must_match(sample_copy):
    ann = sample_copy / "annotations"
    shutil.copy(ann / "instances_sample.json", ann / "instances_train.json")
    (ann / "instances_sample.json").rename(ann / "instances_val.json")
    DET.validate_data(sample_copy)  # the train/val layout itself is fine
    assert DET.data_info(sample_copy)["layout"] == "train/val jsons"
    _edit_json(sample_copy, lambda d: d["categories"].pop(), "annotations/instances_val.json")
    _raises(sample_copy, "instances_val.json", "categories differ")


def test_init_from_missing_checkpoint(tmp_path):
    with pytest.raises(DataError, match="nope.pth"):
        DET.build_config("fp32", DET.DEFAULT_DATA, "smoke", tmp_path, 0, init_from=tmp_path / "nope.pth")


# ---------------------------------------------------------------- metric oracle
def test_ground_truth_as_detections_gives_ap_1(tmp_path):
    """Every ground-truth box of SMOKE_DATA (80 classes, crowd boxes) submitted as a detection with
    score 1, through the configured dataset and CocoMetric: AP must be exactly 1; dropping every
    other image's detections must lower it (the oracle is not trivially 1)."""
    from mmdet.registry import DATASETS, METRICS

    cfg = DET.build_config("fp32", SMOKE_DATA, "smoke", tmp_path, 0)
    ds_cfg = dict(cfg.test_dataloader.dataset)
    ds_cfg.pop("indices")  # every image
    ds = DATASETS.build(ds_cfg)

    def ap(keep):
        metric = METRICS.build(cfg.test_evaluator)
        metric.dataset_meta = ds.metainfo
        samples = []
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            inst = [x for x in info["instances"] if not x["ignore_flag"]] if keep(i) else []
            boxes = torch.tensor([x["bbox"] for x in inst], dtype=torch.float32).reshape(-1, 4)
            samples.append(dict(img_id=info["img_id"], ori_shape=(info["height"], info["width"]),
                                pred_instances=dict(bboxes=boxes, scores=torch.ones(len(inst)),
                                                    labels=torch.tensor([x["bbox_label"] for x in inst],
                                                                        dtype=torch.long))))
        metric.process({}, samples)
        return metric.evaluate(len(samples))

    full = ap(lambda i: True)
    assert full[DET.METRIC["key"]] == pytest.approx(1.0)
    for k in DET.SECONDARY_KEYS:
        assert k in full and (full[k] == pytest.approx(1.0) or full[k] == -1.0)  # -1: no box of that size
    assert ap(lambda i: i % 2 == 0)[DET.METRIC["key"]] < 0.9


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("model", det.MODELS_)
@pytest.mark.parametrize("backbone", sorted(backbones.PRESETS))
def test_build_config_builds_runner(tmp_path, backbone, model):
    from mmengine.runner import Runner
    cfg = DET.build_config(backbone, SMOKE_DATA, "smoke", tmp_path / "wd", 0, model=model)
    runner = Runner.from_cfg(cfg)
    m = runner.model
    assert type(m.backbone).__name__ == "BiNealNet" and m.backbone.precision == backbones.PRESETS[backbone]["precision"]
    assert m.backbone.width == 1.0 == cfg.bench.width  # binealnet too: backbones.presets.TASK_WIDTHS
    if model == "centernet":
        assert m.neck.deconv_layers[0].conv.in_channels == m.backbone.out_channels[-1] and not m.neck.use_dcn
    else:
        assert list(m.neck.in_channels) == list(m.backbone.out_channels)
    assert m.bbox_head.num_classes == 80 and cfg.randomness.seed == 0
    assert cfg.optim_wrapper.type == "OptimWrapper"
    assert DET.build_config(backbone, SMOKE_DATA, "smoke", tmp_path, 0, device="cuda").optim_wrapper.type == \
        "AmpOptimWrapper"


def test_seed_variant_and_options_are_in_config(tmp_path):
    cfg = DET.build_config("binealnet", DET.DEFAULT_DATA, "smoke", tmp_path, 3, variant="binary-ds3-clip-lr0.1",
                           model="retinanet", width=1.0, head_precision="int8")
    assert cfg.bench.backbone["aux_lr_mult"] == 0.1 and cfg.bench.width == 1.0 and cfg.randomness.seed == 3
    assert cfg.optim_wrapper.paramwise_cfg.aux_lr_mult == 0.1 and cfg.optim_wrapper.constructor == "BenchParamGroups"
    assert cfg.model.type == "QuantScalesAfterInit" and cfg.model.model.type == "BenchQuantNeckHead"
    assert cfg.model.model.detector.type == "RetinaNet"
    assert DET.example_inputs("paper")[0].shape == (1, 3, 512, 512)
    assert DET.example_inputs("smoke")[0].shape == (1, 3, 128, 128)


def test_init_from_loads_backbone_and_reports_mismatch(tmp_path):
    from mmdet.registry import MODELS
    src = backbones.build("fp32", out_indices=(3,))
    ckpt = tmp_path / "cls.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, ckpt)
    cfg = DET.build_config("fp32", DET.DEFAULT_DATA, "smoke", tmp_path, 0, init_from=ckpt)
    m = MODELS.build(cfg.model)
    m.init_weights()
    assert torch.equal(m.backbone.stages[3][1].conv2.weight, src.stages[3][1].conv2.weight)
    wide = MODELS.build(DET.build_config("fp32", DET.DEFAULT_DATA, "smoke", tmp_path, 0, init_from=ckpt,
                                         width=2.0).model)
    with pytest.warns(UserWarning, match="shape mismatch"):
        wide.init_weights()


def test_every_backbone_gets_the_same_neck_and_head_at_one_seed(tmp_path):
    """At one seed the three precisions' detectors start from the same neck and head weights (and see
    the same batches), so their runs differ in the backbone alone. Before, int8 and fp32 shared a head
    draw and binealnet had its own, as its layers drew a different number of random values."""
    from mmdet.registry import MODELS
    from mmengine.runner import set_random_seed
    heads = {}
    for b in ("fp32", "int8", "binealnet"):
        set_random_seed(1)
        m = MODELS.build(DET.build_config(b, DET.DEFAULT_DATA, "smoke", tmp_path, 1).model)
        m.init_weights()
        heads[b] = {k: v for k, v in m.state_dict().items() if not k.startswith("backbone.")}
    assert heads["fp32"].keys() == heads["binealnet"].keys()
    for b in ("int8", "binealnet"):
        assert all(torch.equal(heads["fp32"][k], heads[b][k]) for k in heads["fp32"]), b
    set_random_seed(2)
    other = MODELS.build(DET.build_config("fp32", DET.DEFAULT_DATA, "smoke", tmp_path, 2).model)
    assert not torch.equal(other.bbox_head.heatmap_head[0].weight, heads["fp32"]["bbox_head.heatmap_head.0.weight"])


@pytest.mark.parametrize("head_precision", ["fp32", "binary"])
def test_init_from_keeps_the_checkpoints_learned_binary_scales(tmp_path, head_precision):
    """With a quantized neck and head, the detector's init ends by setting binary beta = mean|W|
    (QuantScalesAfterInit); a backbone loaded from a classification run must keep the beta that
    run learned, while the neck and head (not in the checkpoint) still get mean|W|."""
    from mmdet.registry import MODELS
    cfg = DET.build_config("binealnet", DET.DEFAULT_DATA, "smoke", tmp_path, 0, head_precision=head_precision)
    src = MODELS.build(cfg.model).backbone
    with torch.no_grad():
        for p_name, p in src.named_parameters():
            if p_name.endswith("weight_quantizer.beta"):
                p.uniform_(0.5, 2.0)  # learned values, unlike mean|W|
    ckpt = tmp_path / "cls.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, ckpt)
    m = MODELS.build(DET.build_config("binealnet", DET.DEFAULT_DATA, "smoke", tmp_path, 0, init_from=ckpt,
                                      head_precision=head_precision).model)
    m.init_weights()
    betas = {k: v for k, v in m.backbone.state_dict().items() if k.endswith("weight_quantizer.beta")}
    assert betas and all(torch.equal(v, src.state_dict()[k]) for k, v in betas.items())
    others = [mod for name, mod in m.named_modules() if not name.startswith("backbone")
              and hasattr(mod, "weight_quantizer") and hasattr(mod.weight_quantizer, "beta")]
    for mod in others:
        w = mod.weight.transpose(0, 1) if isinstance(mod, torch.nn.ConvTranspose2d) else mod.weight  # (out, in, ..)
        torch.testing.assert_close(mod.weight_quantizer.beta.flatten(), w.abs().mean(dim=(1, 2, 3)))
    assert bool(others) == (head_precision != "fp32")


# ---------------------------------------------------------------- smoke trainings
def _check_metrics(metrics):
    ap = metrics[DET.METRIC["key"]]
    assert isinstance(ap, float) and 0.0 <= ap <= 1.0 and not math.isnan(ap)
    assert all(k in metrics for k in DET.SECONDARY_KEYS)


def _cost(model, schedule="smoke"):
    from bench.cost import count_cost
    return count_cost(model, DET.example_inputs(schedule), forward=lambda m, xs: DET.forward_for_cost(m, *xs)).to_dict()


@pytest.mark.parametrize("backbone", sorted(backbones.PRESETS))
def test_centernet_smoke_per_backbone(tmp_path, backbone):
    # width 0.5 keeps CI fast; the width is in cfg.bench
    cfg = DET.build_config(backbone, SMOKE_DATA, "smoke", tmp_path / "wd", 0, width=0.5)
    runner, metrics = _train_test(cfg)
    _check_metrics(metrics)
    assert (tmp_path / "wd" / "epoch_1.pth").is_file()
    cost = _cost(runner.model)
    assert set(cost["parts"]) == {"backbone", "neck", "head"}
    bits = {"binealnet": "1/1", "int8": "8/8", "fp32": "32/32"}[backbone]
    assert cost["parts"]["backbone"]["macs_by_bits"].get(bits, 0) > 0


def test_retinanet_smoke(tmp_path):
    cfg = DET.build_config("int8", SMOKE_DATA, "smoke", tmp_path / "wd", 0, model="retinanet", width=0.5)
    runner, metrics = _train_test(cfg)
    _check_metrics(metrics)


@pytest.mark.parametrize("precision,bits", [("int8", {"8/8"}), ("binary", {"1/1", "8/8"})])
def test_quantized_neck_and_head_smoke(tmp_path, precision, bits):
    cfg = DET.build_config("fp32", SMOKE_DATA, "smoke", tmp_path / "wd", 0, head_precision=precision, width=0.5)
    assert cfg.bench.head_precision == precision
    runner, metrics = _train_test(cfg)
    _check_metrics(metrics)
    m = runner.model
    layers = [x for n, x in m.named_modules() if isinstance(x, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
              and n.split(".")[0] in ("neck", "bbox_head")]
    assert layers and all(hasattr(x, "weight_quantizer") for x in layers)  # nothing left in float
    # the prediction convs stay INT8 under a binary head (first/last-layer rule)
    assert {x.weight_quantizer.bits for x in (m.bbox_head.heatmap_head[2], m.bbox_head.wh_head[2])} == {8}
    cost = _cost(m)
    assert set(cost["parts"]["head"]["macs_by_bits"]) == bits
    assert set(cost["parts"]["neck"]["macs_by_bits"]) == {"8/8" if precision == "int8" else "1/1"}


def test_bench_run_detection_writes_complete_record(tmp_path):
    """`bench run --task detection` end to end (the runner's path): a complete record with COCO AP,
    the cost split into backbone / neck / head and the data layout."""
    from bench import results
    from bench.cli import main
    assert main(["run", "--task", "detection", "--backbone", "fp32", "--data", str(SMOKE_DATA),
                 "--results-dir", str(tmp_path / "res"), "--work-dir", str(tmp_path / "wd"),
                 "--width", "0.5"]) == 0
    (rec_file,) = (tmp_path / "res" / "detection").glob("*.json")
    rec = json.loads(rec_file.read_text())
    for k in results.REQUIRED_KEYS:
        assert k in rec, k
    assert rec["metric"]["name"] == "bbox_AP" and 0.0 <= rec["metric"]["value"] <= 1.0
    assert set(rec["metric"]["secondary"]) == {k.split("/")[-1] for k in DET.SECONDARY_KEYS}
    assert set(rec["cost"]["parts"]) == {"backbone", "neck", "head"} and rec["cost_input"] == [[1, 3, 128, 128]]
    assert rec["data"]["name"] == SMOKE_DATA.name and len(rec["data"]["sha256"]) == 64
    assert rec["config"]["bench"]["model"] == "centernet" and rec["config"]["bench"]["head_precision"] == "fp32"


def _cls_run_dir(tmp_path, name, schedule):
    """An (untrained) classification run of ours at ``schedule``: checkpoint + bench_run.json."""
    from mmengine.registry import MODELS
    cls = tasks.get("classification")
    cfg = cls.build_config("fp32", REPO / "data" / "cifar10-sample", schedule, tmp_path, 0, width=0.25)
    run = tmp_path / name
    run.mkdir()
    torch.save({"state_dict": MODELS.build(cfg.model).state_dict(), "meta": {}}, run / "epoch_1.pth")
    (run / "bench_run.json").write_text(json.dumps(dict(
        task="classification", backbone="fp32", variant=None, schedule=schedule, epochs=None, seed=0,
        task_options={"width": 0.25}, wall_s=12.5)))
    return run / "epoch_1.pth"


def test_run_from_a_pretrained_backbone_records_it_and_refuses_one_that_does_not_fit(tmp_path, capsys):
    from bench.cli import main
    argv = ["run", "--task", "detection", "--backbone", "fp32", "--width", "0.25", "--results-dir",
            str(tmp_path / "res")]
    pre = _cls_run_dir(tmp_path, "pre", "pretrain-short")  # ImageNet stem at 96 px: detection's backbone
    assert main(argv + ["--init-from", str(pre), "--work-dir", str(tmp_path / "wd")]) == 0
    (f,) = (tmp_path / "res" / "detection").glob("*.json")
    rec = json.loads(f.read_text())
    assert Path(rec["init_from"]["checkpoint"]).name == pre.name and rec["init_from"]["wall_s"] == 12.5
    assert rec["init_from"]["run_id"] in f.stem and str(tmp_path) not in f.read_text()  # a hash, never a path
    assert rec["init_from"]["run"]["schedule"] == "pretrain-short"
    cifar_stem = _cls_run_dir(tmp_path, "small", "smoke")  # 32 px: the CIFAR stem, another first conv
    assert main(argv + ["--init-from", str(cifar_stem), "--work-dir", str(tmp_path / "wd2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"bench: error: --init-from {cifar_stem}: its backbone does not fit") and "stem" in err
    assert not (tmp_path / "wd2").exists()


@pytest.mark.parametrize("backbone", sorted(backbones.PRESETS))
def test_pretrain_schedule_builds_detections_default_backbones(tmp_path, backbone):
    """With no --width on either side, a pretrain run's backbone is exactly detection's."""
    from mmengine.registry import MODELS

    from bench.runner import _backbone_of
    cls = tasks.get("classification")
    pre = _backbone_of(MODELS.build(cls.build_config(backbone, REPO / "data" / "cifar10-sample", "pretrain-short",
                                                     tmp_path, 0).model)).state_dict()
    det_bb = _backbone_of(MODELS.build(DET.build_config(backbone, DET.DEFAULT_DATA, "smoke", tmp_path, 0).model))
    assert {k: v.shape for k, v in det_bb.state_dict().items()} == {k: v.shape for k, v in pre.items()}


# ---------------------------------------------------------------- frozen-random reference row
def test_frozen_random_row_trains_neck_and_head_only(tmp_path):
    """The floor row: through `bench run`, the backbone's weights end as they started (a fresh fp32
    build with the same seed), BatchNorm statistics move (batch statistics, not frozen_stages'
    eval mode), the head learns, and the record says it trained (epochs > 0) and is a reference row."""
    from bench.results import _is_reference
    from bench.runner import run
    rec, path = run("detection", det.FROZEN_RANDOM, data=str(SMOKE_DATA), schedule="smoke", seed=0,
                    work_dir=tmp_path / "wd", results_dir=tmp_path / "res", width=0.5)
    assert rec["epochs"] == DET.SCHEDULES["smoke"]["epochs"] > 0 and _is_reference(rec) and path.is_file()
    assert rec["recipe"]["name"] == "task-default"
    state = torch.load(tmp_path / "wd" / "epoch_1.pth", map_location="cpu", weights_only=False)["state_dict"]
    from mmengine.runner import Runner
    fresh = Runner.from_cfg(DET.build_config(det.FROZEN_RANDOM, SMOKE_DATA, "smoke", tmp_path / "wd0", 0, width=0.5))
    init = {f"backbone.{k}": v for k, v in fresh.model.backbone.state_dict().items()}
    weights = [k for k in init if k.endswith("weight") or k.endswith("bias")]
    assert weights and all(torch.equal(state[k], init[k]) for k in weights)
    assert not torch.equal(state["backbone.stem.1.running_mean"], init["backbone.stem.1.running_mean"])
    head = next(k for k in state if k.startswith("bbox_head.") and k.endswith("weight"))
    assert not torch.equal(state[head], fresh.model.state_dict()[head])


@pytest.mark.parametrize("extra,msg", [
    (["--init-from", "x.pth"], "takes no --init-from"),
    (["--recipe", "adamw"], "takes no --recipe"),
    (["--teacher", "x.pth"], "takes no --teacher"),
    (["--variant", "binary"], "takes no --variant"),
])
def test_frozen_random_row_refuses_what_does_not_apply(tmp_path, capsys, extra, msg):
    from bench.cli import main
    res = tmp_path / "res"
    ckpt = tmp_path / "x.pth"
    torch.save({"state_dict": {}}, ckpt)
    extra = [str(ckpt) if e == "x.pth" else e for e in extra]
    assert main(["run", "--task", "detection", "--backbone", det.FROZEN_RANDOM, "--results-dir", str(res),
                 "--work-dir", str(tmp_path / "wd"), *extra]) == 2
    assert msg in capsys.readouterr().err and not res.exists() and not (tmp_path / "wd").exists()


def test_teacher_without_a_distilling_recipe_is_refused(tmp_path, capsys):
    """Detection has no default recipe: a --teacher with the task's own optimizer would go unused."""
    from bench.cli import main
    ckpt = tmp_path / "x.pth"
    torch.save({"state_dict": {}}, ckpt)
    assert main(["run", "--task", "detection", "--backbone", "fp32", "--teacher", str(ckpt), "--results-dir",
                 str(tmp_path / "res"), "--work-dir", str(tmp_path / "wd")]) == 2
    assert "does not use a teacher" in capsys.readouterr().err and not (tmp_path / "wd").exists()
