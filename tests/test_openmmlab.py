"""backbones.mmcv_ext (stand-in for mmcv's compiled ops) and backbones.openmmlab (registration,
checkpoint loading): ops against independent references, BiNealNet inside stock-style mmdet / mmseg
models, and mmengine checkpoints under torch >= 2.6. CPU, tiny inputs."""
from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
import types

import pytest
import torch
import torchvision

import backbones
from backbones import mmcv_ext

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

import backbones.openmmlab  # noqa: E402  (installs the stand-in before mmcv.ops is imported)
import mmcv.ops  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

NUM_CLASSES = 4
# the ops must be device-agnostic: on a GPU machine every op test also runs on CUDA, where mmdet
# really calls them (FocalLoss -> sigmoid_focal_loss, batched_nms -> nms)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------- import
def test_import_backbones_does_not_import_openmmlab():
    code = ("import sys, backbones, backbones.mmcv_ext; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mmcv', 'mmdet', 'mmseg', 'mmengine')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_install_is_idempotent():
    mmcv_ext.install()
    mmcv_ext.install()
    finders = [f for f in sys.meta_path if getattr(f, "is_binealbench_stand_in", False)]
    # after the standard path finder (so a real compiled mmcv._ext wins); other packages (six)
    # may append their own importers later
    from importlib.machinery import PathFinder
    assert len(finders) == 1 and sys.meta_path.index(finders[0]) > sys.meta_path.index(PathFinder)
    import importlib.util
    if importlib.util.find_spec("mmcv._ext").loader is finders[0]:  # no compiled mmcv here
        assert sys.modules["mmcv._ext"].IS_STAND_IN
        assert mmcv.ops.get_compiling_cuda_version() == "not available"


def test_real_ext_wins(tmp_path):
    # a module named _ext on mmcv's package path stands for the compiled .so: the path finder
    # runs before the stand-in's finder, so it must be the one imported
    (tmp_path / "_ext.py").write_text("REAL = True\n")
    code = ("import mmcv, backbones.mmcv_ext as s; s.install(); "
            f"mmcv.__path__.insert(0, {str(tmp_path)!r}); "
            "import mmcv._ext as e; assert getattr(e, 'REAL', False) and not hasattr(e, 'IS_STAND_IN'), e")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_op_raises_with_hint():
    ext = mmcv_ext.fill_module(types.ModuleType("mmcv._ext"))
    assert callable(ext.deform_conv_forward) and not hasattr(ext, "__path__")
    with pytest.raises(NotImplementedError, match=r"mmcv op 'deform_conv_forward' needs compiled mmcv: "
                                                  r"see README 'Full mmcv' \(pip install mmcv==2.1.0 from source"):
        ext.deform_conv_forward(torch.zeros(1))
    with pytest.raises(NotImplementedError, match="pool_mode='max'"):
        mmcv.ops.roi_align(torch.rand(1, 2, 8, 8), torch.tensor([[0., 1, 1, 5, 5]]), 2, 1.0, 0, "max")


# ------------------------------------------------------------------------------------------- NMS
def _boxes(n=80, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = 4 + torch.rand(n, 2, generator=g) * 16
    return torch.cat([xy, xy + wh], 1).to(device), torch.rand(n, generator=g).to(device)


def _iou(a, b, offset=0):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + offset)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + offset)
    area = lambda r: (r[2] - r[0] + offset) * (r[3] - r[1] + offset)  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def _ref_nms(boxes, scores, thr, offset=0):
    b, s = boxes.tolist(), scores.tolist()
    keep = []
    for i in sorted(range(len(b)), key=lambda i: -s[i]):
        if all(_iou(b[i], b[k], offset) <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("thr", [0.3, 0.6])
def test_nms_matches_bruteforce(thr, offset, device):
    boxes, scores = _boxes(device=device)
    expected = _ref_nms(boxes, scores, thr, offset)
    assert 5 < len(expected) < len(boxes)  # the case really suppresses something
    dets, inds = mmcv.ops.nms(boxes, scores, thr, offset=offset)
    assert inds.tolist() == expected
    torch.testing.assert_close(dets, torch.cat([boxes[expected], scores[expected, None]], 1))
    assert mmcv_ext.nms(boxes[:0], scores[:0], thr).shape == (0,)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_nms_keeps_classes_apart(device):
    boxes, scores = _boxes(device=device)
    labels = torch.arange(len(boxes), device=device) % 3
    _, keep = mmcv.ops.batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=0.5))
    expected = [int(torch.nonzero(labels == c)[k]) for c in range(3)
                for k in _ref_nms(boxes[labels == c], scores[labels == c], 0.5)]
    assert sorted(keep.tolist()) == sorted(expected)
    assert scores[keep].diff().le(0).all()  # descending score order


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_matches_reference(method):
    boxes, scores = _boxes(40)
    b, s = boxes.tolist(), scores.tolist()
    alive, expected = list(range(len(b))), []
    while alive:  # the soft-NMS loop of mmcv's C++ in plain python
        i = max(alive, key=lambda k: s[k])
        alive.remove(i)
        expected.append((i, s[i]))
        for k in alive:
            o = _iou(b[i], b[k])
            s[k] *= (1 - o if o >= 0.3 else 1.0) if method == "linear" else math.exp(-o * o / 0.5)
        alive = [k for k in alive if s[k] >= 0.05]
    dets, inds = mmcv.ops.soft_nms(boxes, scores, 0.3, sigma=0.5, min_score=0.05, method=method)
    assert inds.tolist() == [i for i, _ in expected]
    torch.testing.assert_close(dets[:, 4], torch.tensor([v for _, v in expected]))
    torch.testing.assert_close(dets[:, :4], boxes[inds])


def test_nms_match_matches_reference():
    boxes, scores = _boxes(40)
    b, s = boxes.tolist(), scores.tolist()
    done, expected = set(), []
    order = sorted(range(len(b)), key=lambda i: -s[i])
    for pos, i in enumerate(order):
        if i in done:
            continue
        group = [i] + [j for j in order[pos + 1:] if j not in done and _iou(b[i], b[j]) >= 0.4]
        done.update(group)
        expected.append(group)
    got = mmcv.ops.nms_match(torch.cat([boxes, scores[:, None]], 1), 0.4)
    assert [g.tolist() for g in got] == expected


@pytest.mark.parametrize("device", DEVICES)
def test_bbox_overlaps_matches_torchvision(device):
    a, _ = _boxes(10, seed=1, device=device)
    b, _ = _boxes(7, seed=2, device=device)
    torch.testing.assert_close(mmcv.ops.bbox_overlaps(a, b), torchvision.ops.box_iou(a, b))
    torch.testing.assert_close(mmcv.ops.bbox_overlaps(a, a, aligned=True), torchvision.ops.box_iou(a, a).diag())


# -------------------------------------------------------------------------------------- RoIAlign
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_matches_torchvision(aligned, sampling_ratio, device):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, device=device, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 2.0, 9.5, 12.0], [1, 0.0, 0.0, 30.0, 30.0], [1, 5.2, 3.1, 5.9, 4.0]],
                        dtype=torch.float64, device=device)
    args = ((3, 4), 0.5, sampling_ratio)
    out = mmcv.ops.roi_align(x, rois, *args, "avg", aligned)
    ref = torchvision.ops.roi_align(x, rois, *args, aligned)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, g)
    (ref_grad,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad, ref_grad)


# ------------------------------------------------------------------------------------ focal loss
def _logits(n=50, c=NUM_CLASSES, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g) * 3).to(device).requires_grad_()
    target = torch.randint(0, c + 1, (n,), generator=g).to(device)  # c = background
    return x, target


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.0, 0.5), (1.5, 0.75)])
def test_sigmoid_focal_loss_matches_torchvision(gamma, alpha, device):
    x, target = _logits(device=device)
    onehot = torch.nn.functional.one_hot(target, NUM_CLASSES + 1)[:, :NUM_CLASSES].float()
    out = mmcv.ops.sigmoid_focal_loss(x, target, gamma, alpha, None, "none")
    ref = torchvision.ops.sigmoid_focal_loss(x, onehot, alpha, gamma, "none")
    torch.testing.assert_close(out, ref)
    g = torch.rand_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    # reductions and the per-class weight (background rows unweighted)
    w = torch.tensor([0.5, 1.0, 2.0, 3.0], device=device)
    out = mmcv.ops.sigmoid_focal_loss(x, target, gamma, alpha, w, "mean")
    ref = torchvision.ops.sigmoid_focal_loss(x, onehot, alpha, gamma, "none")
    ref = (ref * torch.cat([w, w.new_ones(1)])[target, None]).sum() / len(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(ref, x)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_mmdet_cuda_focal_path_matches_python_path(device):
    """mmdet's FocalLoss takes ``sigmoid_focal_loss`` (our op) on CUDA and ``py_sigmoid_focal_loss``
    on CPU; the CUDA function is device-agnostic here, so compare the two on every device."""
    from mmdet.models.losses.focal_loss import FocalLoss, py_sigmoid_focal_loss, sigmoid_focal_loss
    x, target = _logits(device=device)
    onehot = torch.nn.functional.one_hot(target, NUM_CLASSES + 1)[:, :NUM_CLASSES]
    weight = torch.rand(len(x), device=device)
    if device == "cuda":  # the module itself picks the op on CUDA
        out = FocalLoss(reduction="sum")(x, target, weight)
        ref = py_sigmoid_focal_loss(x, onehot, weight, reduction="sum")
        torch.testing.assert_close(out, ref)
    out = sigmoid_focal_loss(x, target, weight, avg_factor=7.0)
    ref = py_sigmoid_focal_loss(x, onehot, weight, avg_factor=7.0)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(ref, x)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_softmax_focal_loss_matches_autograd(device):
    x, target = _logits(device=device)
    target = target.clamp(max=NUM_CLASSES - 1)
    target[:3] = -1  # ignored rows
    p = x.softmax(1).gather(1, target.clamp(min=0)[:, None]).squeeze(1)
    ref = torch.where(target >= 0, -0.25 * (1 - p) ** 2 * p.log(), torch.zeros_like(p))
    torch.testing.assert_close(mmcv.ops.softmax_focal_loss(x, target, 2.0, 0.25, None, "none"), ref)
    # mmcv's own backward only handles a scalar grad_output (reduction 'mean' or 'sum')
    out = mmcv.ops.softmax_focal_loss(x, target, 2.0, 0.25, None, "mean")
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(ref.mean(), x)[0])


# -------------------------------------------------------------------------------- models (mmdet)
def _backbone(name=None, **kw):
    """(backbone cfg, its out_channels) for a preset name or plain BiNealNet kwargs."""
    kw = {**backbones.PRESETS[name], **kw} if name else kw
    return dict(type="BiNealNet", **kw), backbones.BiNealNet(**kw).out_channels


DET_PREPROCESSOR = dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                        bgr_to_rgb=True, pad_size_divisor=32)


def _centernet(backbone, channels):
    # mmdet's centernet_r18_8xb16-crop512-140e_coco: the dcnv2 config with neck use_dcn=False
    return dict(
        type="CenterNet", data_preprocessor=DET_PREPROCESSOR, backbone=backbone,
        neck=dict(type="CTResNetNeck", in_channels=channels[-1], num_deconv_filters=(256, 128, 64),
                  num_deconv_kernels=(4, 4, 4), use_dcn=False),
        bbox_head=dict(type="CenterNetHead", num_classes=NUM_CLASSES, in_channels=64, feat_channels=64,
                       loss_center_heatmap=dict(type="GaussianFocalLoss", loss_weight=1.0),
                       loss_wh=dict(type="L1Loss", loss_weight=0.1),
                       loss_offset=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=None, test_cfg=dict(topk=100, local_maximum_kernel=3, max_per_img=100))


# score_thr=0 so that untrained heads still send boxes through batched_nms -> nms
DENSE_TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=100)


def _retinanet(backbone, channels):
    # mmdet's retinanet_r18_fpn_1x_coco, narrower
    return dict(
        type="RetinaNet", data_preprocessor=DET_PREPROCESSOR, backbone=backbone,
        neck=dict(type="FPN", in_channels=list(channels), out_channels=64, start_level=1,
                  add_extra_convs="on_input", num_outs=5),
        bbox_head=dict(
            type="RetinaHead", num_classes=NUM_CLASSES, in_channels=64, stacked_convs=2, feat_channels=64,
            anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1),
                       sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=DENSE_TEST_CFG)


def _fcos(backbone, channels):
    # mmdet's fcos_r50-caffe_fpn_gn-head_1x_coco, narrower
    return dict(
        type="FCOS", data_preprocessor=DET_PREPROCESSOR, backbone=backbone,
        neck=dict(type="FPN", in_channels=list(channels), out_channels=64, start_level=1,
                  add_extra_convs="on_output", num_outs=5, relu_before_extra_convs=True),
        bbox_head=dict(
            type="FCOSHead", num_classes=NUM_CLASSES, in_channels=64, stacked_convs=2, feat_channels=64,
            strides=[8, 16, 32, 64, 128],
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="IoULoss", loss_weight=1.0),
            loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
        test_cfg=DENSE_TEST_CFG)


def _train_and_predict(registry, model_cfg, packed, device="cpu"):
    torch.manual_seed(0)
    model = registry.build(ConfigDict(model_cfg)).to(device)  # heads read test_cfg as attributes, as from a Config
    assert isinstance(model.backbone, backbones.BiNealNet)
    model.train()
    losses = model(**model.data_preprocessor(packed, True), mode="loss")
    loss, _ = model.parse_losses(losses)
    assert losses and torch.isfinite(loss), losses
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    first_trained = model.backbone.stages[max(model.backbone.frozen_stages, 0)]  # the stock RetinaNet freezes one
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in first_trained.parameters())
    model.eval()
    with torch.no_grad():
        return model(**model.data_preprocessor(packed, False), mode="predict")


def _stock(package, config):
    """A config shipped in the installed mmdet / mmseg, with only its backbone's type changed to BiNealNet."""
    import importlib
    from pathlib import Path

    from mmengine.config import Config
    root = Path(importlib.import_module(package).__file__).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(root / config))
    cfg.model.backbone.type = "BiNealNet"
    return cfg.model


# the stock CenterNet-R18 and RetinaNet-R18 (mmdet's own configs: ResNet's arguments, pretrained init_cfg)
STOCK = {"centernet-binary": "centernet/centernet_r18_8xb16-crop512-140e_coco.py",
         "retinanet-binary": "retinanet/retinanet_r18_fpn_1x_coco.py"}
DETECTORS = {
    **{k: (lambda *_, c=c: _stock("mmdet", c), (None, None), "cpu") for k, c in STOCK.items()},
    "fcos-binary": (_fcos, _backbone(precision="binary"), "cpu"),
    "retinanet-int8": (_retinanet, _backbone("int8"), "cpu"),
    "retinanet-fp32": (_retinanet, _backbone("fp32"), "cpu"),
}
if torch.cuda.is_available():  # where FocalLoss and nms reach the stand-in's ops for real
    DETECTORS.update({f"{k}-cuda": (DETECTORS[k][0], DETECTORS[k][1], "cuda")
                      for k in ("centernet-binary", "retinanet-binary", "fcos-binary")})


@pytest.mark.parametrize("make, backbone, device", DETECTORS.values(), ids=DETECTORS.keys())
def test_detector_with_binealnet(make, backbone, device):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    init_default_scope("mmdet")
    packed = demo_mm_inputs(2, [(3, 128, 128)] * 2, num_items=[3, 2], num_classes=NUM_CLASSES)
    cfg = make(*backbone)
    preds = _train_and_predict(MODELS, cfg, packed, device)
    assert len(preds) == 2
    # the stock RetinaNet keeps its score threshold (0.05): an untrained head may give no box
    some = cfg["test_cfg"].get("score_thr", 0) == 0
    for p in preds:
        inst = p.pred_instances
        assert inst.bboxes.shape[1] == 4 and len(inst.bboxes) == len(inst.scores) == len(inst.labels) >= some
        assert torch.isfinite(inst.bboxes).all()


# -------------------------------------------------------------------------------- models (mmseg)
def test_fcn_with_binealnet():
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope("mmseg")
    # mmseg's stock FCN-R18-D8 (ResNetV1c's arguments; the segmentor hands its `pretrained` to the backbone)
    cfg = _stock("mmseg", "fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py")
    cfg.data_preprocessor.size = (64, 64)  # 64x64 crops, not the config's 512x1024: a CPU test
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, NUM_CLASSES, (1, 64, 64), generator=g))
        samples.append(s)
    packed = dict(inputs=[torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(2)],
                  data_samples=samples)
    built = MODELS.build(copy.deepcopy(cfg))  # the segmentor writes its `pretrained` into the backbone's dict
    assert built.backbone.init_cfg == dict(type="Pretrained", checkpoint="open-mmlab://resnet18_v1c")
    assert built.backbone.strides == (1, 2, 1, 1) and built.backbone.dilations == (1, 1, 2, 4)
    preds = _train_and_predict(MODELS, cfg, packed)
    assert [p.pred_sem_seg.data.shape for p in preds] == [(1, 64, 64)] * 2
    assert preds[0].seg_logits.data.shape == (19, 64, 64)  # Cityscapes' classes


def test_registered_in_every_registry():
    import importlib
    for name, registry in backbones.openmmlab.REGISTRIES.items():
        assert registry.get("BiNealNet") is backbones.BiNealNet, name
    importlib.reload(backbones.openmmlab)  # repeated registration does not raise
    from mmdet.registry import MODELS
    m = MODELS.build(dict(type="BiNealNet", precision="fp32", out_indices=(3,)))
    assert [o.shape[1] for o in m(torch.rand(1, 3, 64, 64))] == [512]


def test_config_custom_imports_registers(tmp_path):
    from mmengine.config import Config
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text("custom_imports = dict(imports=['backbones.openmmlab'], allow_failed_imports=False)\n"
                        "model = dict(type='BiNealNet', precision='binary', width=0.5)\n")
    cfg = Config.fromfile(str(cfg_file))  # imports custom_imports, as mmdet/mmseg tools do
    from mmseg.registry import MODELS
    init_default_scope("mmseg")
    assert MODELS.build(cfg.model).out_channels == (32, 64, 128, 256)


# --------------------------------------------------------------------------------- checkpoints
class _Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode="tensor"):
        out = self.linear(inputs)
        return dict(loss=((out - labels) ** 2).mean()) if mode == "loss" else out


class _CountSteps(Hook):
    def __init__(self):
        self.n = 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.n += 1


def _runner(work_dir, epochs, name, **kw):
    from mmengine.runner import Runner
    data = [dict(inputs=torch.rand(2), labels=torch.rand(1)) for _ in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    return Runner(model=_Toy(), work_dir=str(work_dir), experiment_name=name, train_dataloader=loader,
                  optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
                  train_cfg=dict(by_epoch=True, max_epochs=epochs), log_level="WARNING",
                  default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)), **kw)


def test_runner_checkpoint_loads_and_resumes(tmp_path):
    from mmengine.runner import load_checkpoint
    first = _runner(tmp_path, 1, "ckpt_first")
    first.train()
    ckpt = tmp_path / "epoch_1.pth"
    # what the Runner writes (message_hub HistoryBuffers, numpy) is refused by weights-only loading
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)
    model = _Toy()
    load_checkpoint(model, str(ckpt), map_location="cpu")
    torch.testing.assert_close(model.linear.weight, first.model.linear.weight)
    steps = _CountSteps()
    second = _runner(tmp_path, 2, "ckpt_second", resume=True, custom_hooks=[steps])
    second.train()
    assert second.iter == 4 and (tmp_path / "epoch_2.pth").is_file()
    assert steps.n == 2  # resumed after epoch 1 (2 of 4 iterations), not restarted
    torch.testing.assert_close(torch.load(tmp_path / "epoch_2.pth", weights_only=False)["state_dict"]["linear.weight"],
                               second.model.linear.weight.detach())
