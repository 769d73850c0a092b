"""Segmentation task: CamVid layout and checks, the IoU metric oracles, configs that build, smoke trainings."""
import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmseg")

import backbones  # noqa: E402
import backbones.openmmlab  # noqa: E402,F401  (mmcv op stand-in before anything from mmseg)
import tasks  # noqa: E402
import tasks.segmentation as seg  # noqa: E402
from tasks.base import BenchError, DataError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CAMVID = REPO.parent / "shared" / "data" / "camvid"
SAMPLE = seg.Segmentation.DEFAULT_DATA
DATA = CAMVID if CAMVID.is_dir() else SAMPLE  # real CamVid frames for smoke runs
TASK = tasks.get("segmentation")


@pytest.fixture(autouse=True)
def _mmseg_scope():
    from mmengine.registry import DefaultScope, init_default_scope
    if DefaultScope.get_current_instance() is None or DefaultScope.get_current_instance().scope_name != "mmseg":
        init_default_scope("mmseg")
    seg._register()


def _build(cfg):
    from mmseg.registry import MODELS
    m = MODELS.build(cfg.model)
    m.init_weights()
    return m


# ---------------------------------------------------------------- data
def test_embedded_sample_is_real_camvid():
    TASK.validate_data(SAMPLE)
    info = TASK.data_info(SAMPLE)
    assert (info["layout"], info["train_images"], info["test_images"]) == ("camvid", 6, 3)
    assert len(info["sha256"]) == 64 and (SAMPLE / "SOURCE.md").is_file()
    size = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert size < 2_000_000
    # every file is byte-identical to the staged copy's manifest line it lists
    lines = (SAMPLE / "MANIFEST.sha256").read_text().split("\n")
    listed = {ln.split()[1][2:]: ln.split()[0] for ln in lines if ln.strip()}
    assert len(listed) == 18
    for rel, digest in listed.items():
        assert hashlib.sha256((SAMPLE / rel).read_bytes()).hexdigest() == digest


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid not present")
def test_shared_camvid_splits():
    info = TASK.data_info(CAMVID, "short")
    assert (info["train_images"], info["test_images"], info["splits"]) == (367, 233, {"train": "train",
                                                                                      "test": "test"})
    assert TASK.data_info(CAMVID, "smoke")["images"] == 3  # the smoke schedule: first 2 + 1 frames


def test_void_becomes_ignore_index():
    """Through the configured mmseg dataset and LoadAnnotations: raw 11 (void) -> 255, classes kept."""
    from PIL import Image
    from mmseg.registry import DATASETS
    cfg = TASK.build_config("fp32", SAMPLE, "smoke", "/tmp/unused", 0)
    ds_cfg = dict(cfg.test_dataloader.dataset)
    ds_cfg["pipeline"] = [dict(type="LoadAnnotations")]
    ds = DATASETS.build(ds_cfg)
    assert ds.metainfo["classes"] == seg.CAMVID_CLASSES and ds.metainfo["label_map"][11] == 255
    item = ds[0]
    raw = np.asarray(Image.open(item["seg_map_path"]))
    assert (raw == 11).any()
    expected = np.where(raw == 11, 255, raw)
    assert np.array_equal(item["gt_seg_map"], expected)


@pytest.fixture
def sample_copy(tmp_path):
    dst = tmp_path / "camvid"
    shutil.copytree(SAMPLE, dst)
    return dst


def _raises(root, *needles):
    with pytest.raises(DataError) as e:
        TASK.validate_data(root)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    return msg


def _first_label(root, split="train"):
    return sorted((root / split / "labels").glob("*.png"))[0]


def test_label_value_outside_classes(sample_copy):
    from PIL import Image
    lbl = _first_label(sample_copy)
    a = np.asarray(Image.open(lbl)).copy()
    a[5, 7] = 12
    Image.fromarray(a).save(lbl)
    _raises(sample_copy, str(lbl), "[12]", "outside the class list")


def test_ignore_value_255_is_allowed(sample_copy):
    from PIL import Image
    lbl = _first_label(sample_copy)
    a = np.asarray(Image.open(lbl)).copy()
    a[:10] = 255
    Image.fromarray(a).save(lbl)
    TASK.validate_data(sample_copy)


def test_image_and_label_sizes_differ(sample_copy):
    from PIL import Image
    lbl = _first_label(sample_copy, "test")
    Image.open(lbl).resize((240, 180), Image.NEAREST).save(lbl)
    _raises(sample_copy, str(lbl), "240x180", "480x360")


def test_frame_without_label(sample_copy):
    lbl = _first_label(sample_copy)
    lbl.unlink()
    _raises(sample_copy, str(sample_copy / "train" / "images" / (lbl.stem + ".jpg")), "no label map")


def test_colour_label_map(sample_copy):
    from PIL import Image
    lbl = _first_label(sample_copy)
    Image.open(lbl).convert("RGB").save(lbl)
    _raises(sample_copy, str(lbl), "mode RGB")


def test_empty_split(sample_copy):
    for f in (sample_copy / "test" / "images").iterdir():
        f.unlink()
    _raises(sample_copy, str(sample_copy / "test" / "images"), "empty")


def test_missing_root_and_unknown_layout(tmp_path):
    _raises(tmp_path / "nope", "not found")
    (tmp_path / "x" / "stuff").mkdir(parents=True)
    _raises(tmp_path / "x", str(tmp_path / "x"), "no known segmentation layout")


def test_cityscapes_and_ade20k_layouts_recognised(tmp_path):
    """Real mmseg dataset classes on the folder structure (tiny real CamVid pairs renamed)."""
    from mmseg.registry import DATASETS
    img, lbl = sorted((SAMPLE / "train" / "images").glob("*.jpg"))[0], _first_label(SAMPLE)
    cs = tmp_path / "cityscapes"
    for split in ("train", "val"):
        (cs / "leftImg8bit" / split / "aachen").mkdir(parents=True)
        (cs / "gtFine" / split / "aachen").mkdir(parents=True)
        from PIL import Image
        Image.open(img).save(cs / "leftImg8bit" / split / "aachen" / "a_000000_000019_leftImg8bit.png")
        shutil.copy(lbl, cs / "gtFine" / split / "aachen" / "a_000000_000019_gtFine_labelTrainIds.png")
    ade = tmp_path / "ade"
    for split in ("training", "validation"):
        (ade / "images" / split).mkdir(parents=True)
        (ade / "annotations" / split).mkdir(parents=True)
        shutil.copy(img, ade / "images" / split / "ADE_x_1.jpg")
        shutil.copy(lbl, ade / "annotations" / split / "ADE_x_1.png")
    for root, layout, n, dtype in ((cs, "cityscapes", 19, "CityscapesDataset"), (ade, "ade20k", 150, "ADE20KDataset")):
        TASK.validate_data(root)
        assert TASK.data_info(root)["layout"] == layout
        cfg = TASK.build_config("fp32", root, "smoke", tmp_path / "wd", 0)
        assert cfg.model.segmentor.decode_head.num_classes == n and cfg.test_dataloader.dataset.type == dtype
        assert len(DATASETS.build(dict(cfg.test_dataloader.dataset, pipeline=[]))) == 1
    # a Cityscapes folder with only *_labelIds (not converted to train ids): the pair is named
    missing = next((cs / "gtFine" / "val").rglob("*.png"))
    missing.rename(missing.with_name("a_000000_000019_gtFine_labelIds.png"))
    _raises(cs, "a_000000_000019_leftImg8bit.png", "_gtFine_labelTrainIds.png")


# ---------------------------------------------------------------- metric oracles
def _metric(classes, pairs, stock=False):
    from mmseg.registry import METRICS
    m = METRICS.build(dict(type="IoUMetric" if stock else "BenchIoUMetric", iou_metrics=["mIoU"], ignore_index=255))
    m.dataset_meta = {"classes": classes}
    m.process({}, [{"pred_sem_seg": {"data": torch.as_tensor(p)[None]},
                    "gt_sem_seg": {"data": torch.as_tensor(g)[None]}} for p, g in pairs])
    return m.evaluate(len(pairs))


def test_prediction_equal_to_label_gives_miou_1():
    from PIL import Image
    labels = [np.asarray(Image.open(f)).astype(np.int64) for f in sorted((SAMPLE / "test" / "labels").glob("*"))]
    labels = [np.where(x == 11, 255, x) for x in labels]
    pairs = [(np.where(g == 255, 0, g), g) for g in labels]  # whatever is predicted on ignore pixels
    r = _metric(seg.CAMVID_CLASSES, pairs)
    assert r["mIoU"] == pytest.approx(1.0) and r["aAcc"] == pytest.approx(1.0) and r["mAcc"] == pytest.approx(1.0)
    present = {seg.CAMVID_CLASSES[c] for g in labels for c in np.unique(g) if c != 255}
    assert set(r["IoU_per_class"]) == present and set(r["IoU_per_class"].values()) == {1.0}


def test_known_confusion_gives_hand_computed_iou():
    # label row 2 has two ignored pixels; class 'd' occurs nowhere (excluded from the mean)
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 2]])
    # IoU: class 0: 1 / (2 + 2 - 1); class 1: 2 / (3 + 2 - 2); class 2: 1 / (1 + 2 - 1)
    iou = [1 / 3, 2 / 3, 1 / 2]
    r = _metric(("a", "b", "c", "d"), [(pred, label)])
    assert r["mIoU"] == pytest.approx(sum(iou) / 3)
    assert [r["IoU_per_class"][k] for k in "abc"] == pytest.approx(iou) and "d" not in r["IoU_per_class"]
    assert r["aAcc"] == pytest.approx(4 / 6) and r["mAcc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    stock = _metric(("a", "b", "c", "d"), [(pred, label)], stock=True)  # mmseg's own: rounded percent
    assert stock["mIoU"] == pytest.approx(round(100 * r["mIoU"], 2))


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("model,stride", [("fcn", 8), ("deeplabv3", 8), ("fpn", 4)])
def test_models_build_at_their_output_stride(tmp_path, model, stride):
    cfg = TASK.build_config("binealnet", SAMPLE, "smoke", tmp_path, 0, model=model, width=0.25)
    m = _build(cfg)
    assert type(m.backbone).__name__ == "BiNealNet" and m.backbone.precision == "binary"
    dilated = model != "fpn"
    assert m.backbone.strides == ((1, 2, 1, 1) if dilated else (1, 2, 2, 2))
    assert m.backbone.dilations == ((1, 1, 2, 4) if dilated else (1, 1, 1, 1))
    assert m.backbone.stages[3][1].conv1.dilation == ((4, 4) if dilated else (1, 1))
    m.eval()
    with torch.no_grad():
        out = TASK.forward_for_cost(m, torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 11, 64 // stride, 96 // stride)
    assert hasattr(m, "auxiliary_head") == dilated and hasattr(m, "neck") == (model == "fpn")


def test_widths_options_and_devices_in_config(tmp_path):
    cfgs = {b: TASK.build_config(b, SAMPLE, "gpu", tmp_path, 0) for b in sorted(backbones.PRESETS)}
    assert {b: c.bench.width for b, c in cfgs.items()} == {"binealnet": 2.0, "fp32": 1.0, "int8": 1.0}
    assert {c.bench.head_precision for c in cfgs.values()} == {"fp32"} and cfgs["fp32"].bench.model == "fcn"
    c = cfgs["binealnet"]
    assert c.model.segmentor.backbone.width == 2.0 and c.bench.input_size == [360, 480]
    # short: Semantic FPN at half the widths (the 2:1 ratio kept); an explicit --width / --model wins
    short = {b: TASK.build_config(b, SAMPLE, "short", tmp_path, 0) for b in ("binealnet", "int8")}
    assert {b: (c.bench.width, c.bench.model) for b, c in short.items()} == {"binealnet": (1.0, "fpn"),
                                                                             "int8": (0.5, "fpn")}
    c = TASK.build_config("binealnet", SAMPLE, "short", tmp_path, 0, width=0.75, model="fcn")
    assert (c.bench.width, c.bench.model, c.model.segmentor.decode_head.type) == (0.75, "fcn", "FCNHead")
    assert c.optim_wrapper.type == "OptimWrapper"
    assert TASK.build_config("fp32", SAMPLE, "smoke", tmp_path, 0, device="cuda").optim_wrapper.type == "AmpOptimWrapper"
    v = TASK.build_config("binealnet", SAMPLE, "smoke", tmp_path, 5, variant="binary-ds3-clip-lr0.1", width=0.25)
    assert v.bench.backbone["aux_lr_mult"] == 0.1 and v.randomness.seed == 5
    from mmengine.optim import build_optim_wrapper
    model = _build(v)
    groups = build_optim_wrapper(model, v.optim_wrapper).optimizer.param_groups
    slope = model.backbone.stages[0][0].conv1.act_quantizer.slope  # a quantizer's own parameter
    (group,) = [g for g in groups if any(p is slope for p in g["params"])]
    assert group["lr"] == pytest.approx(0.1 * TASK.SCHEDULES["smoke"]["lr"])
    assert TASK.example_inputs("short")[0].shape == (1, 3, *TASK.SCHEDULES["short"]["input_size"])
    with pytest.raises(BenchError, match="unknown segmentation model"):
        TASK.build_config("fp32", SAMPLE, "smoke", tmp_path, 0, model="unet")
    with pytest.raises(DataError, match="nope.pth"):
        TASK.build_config("fp32", SAMPLE, "smoke", tmp_path, 0, init_from=tmp_path / "nope.pth")


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_head_precision(tmp_path, precision):
    from bench.cost import count_cost
    cfg = TASK.build_config("fp32", SAMPLE, "smoke", tmp_path, 0, head_precision=precision, width=0.25)
    m = _build(cfg)
    convs = {n: x for n, x in m.named_modules() if isinstance(x, torch.nn.Conv2d) and n.split(".")[0].endswith("head")}
    assert convs and all(hasattr(x, "weight_quantizer") for x in convs.values())  # nothing left in float
    bits = {n: x.weight_quantizer.bits for n, x in convs.items()}
    assert bits["decode_head.conv_seg"] == bits["auxiliary_head.conv_seg"] == 8
    assert {b for n, b in bits.items() if "conv_seg" not in n} == {1 if precision == "binary" else 8}
    relus = [n for n, x in m.named_modules() if isinstance(x, torch.nn.ReLU) and n.startswith("decode_head")]
    assert bool(relus) == (precision == "int8")
    cost = count_cost(m, TASK.example_inputs("smoke"),
                      forward=lambda mm, xs: TASK.forward_for_cost(mm, *xs)).to_dict()
    assert set(cost["parts"]) == {"backbone", "head"}
    assert set(cost["parts"]["head"]["macs_by_bits"]) == ({"1/1", "8/8"} if precision == "binary" else {"8/8"})


def test_init_from_loads_backbone(tmp_path):
    src = backbones.build("fp32", width=0.25, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
    ckpt = tmp_path / "run.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, ckpt)
    m = _build(TASK.build_config("fp32", SAMPLE, "smoke", tmp_path, 0, width=0.25, init_from=str(ckpt)))
    assert torch.equal(m.backbone.stages[3][1].conv2.weight, src.stages[3][1].conv2.weight)
    assert torch.equal(m.backbone.stem[0].weight, src.stem[0].weight)


# ---------------------------------------------------------------- smoke trainings
@pytest.fixture
def plain_config_text(monkeypatch):
    """mmengine formats the whole config with yapf several times per Runner (log + dump), over a
    second each on 2 cores; the text is not under test here, so a plain repr stands in."""
    from mmengine.config import Config
    monkeypatch.setattr(Config, "pretty_text", property(lambda self: repr(self.to_dict())))


@pytest.mark.parametrize("backbone", sorted(backbones.PRESETS))
def test_smoke_train_test_per_backbone(tmp_path, backbone, plain_config_text):
    from mmengine.runner import Runner
    from bench.cost import count_cost
    cfg = TASK.build_config(backbone, DATA, "smoke", tmp_path / "wd", 0, width=0.25)
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    assert (tmp_path / "wd" / "epoch_1.pth").is_file()
    miou = metrics[TASK.METRIC["key"]]
    assert isinstance(miou, float) and 0.0 <= miou <= 1.0 and not math.isnan(miou)
    assert all(k in metrics for k in TASK.SECONDARY_KEYS)
    assert set(metrics["IoU_per_class"]) <= set(seg.CAMVID_CLASSES) and metrics["IoU_per_class"]
    cost = count_cost(runner.model, TASK.example_inputs("smoke"),
                      forward=lambda m, xs: TASK.forward_for_cost(m, *xs)).to_dict()
    assert set(cost["parts"]) == {"backbone", "head"}
    bits = {"binealnet": "1/1", "int8": "8/8", "fp32": "32/32"}[backbone]
    assert cost["parts"]["backbone"]["macs_by_bits"].get(bits, 0) > 0
    assert set(cost["parts"]["head"]["macs_by_bits"]) == {"32/32"}
