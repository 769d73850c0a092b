"""A stand-in for mmcv's compiled op module ``mmcv._ext``, built on torchvision.ops and plain torch.

mmcv-lite ships no compiled ops, yet every ``mmcv.ops`` module asserts at import time that
``mmcv._ext`` has each op it names, so ``import mmdet.models`` fails. ``install()`` lets
``import mmcv._ext`` resolve to a module made from this file, but only where no real compiled
module exists. Real here: the ops that mmdet's CenterNet / RetinaNet / FCOS and mmseg's FCN reach
(``nms`` via ``batched_nms``; ``sigmoid_focal_loss_*`` via mmdet's ``FocalLoss`` on CUDA), plus
``softnms``, ``nms_match``, ``roi_align_*`` (avg mode), ``softmax_focal_loss_*``, ``bbox_overlaps``.
Every other name answers with a callable that raises ``NotImplementedError``.

Signatures and in-place outputs follow mmcv 2.1.0's C++ (``mmcv/ops/csrc/pytorch/pybind.cpp``);
the Python wrappers in ``mmcv/ops/*.py`` call them. All ops are device-agnostic.
This file must not import mmcv (``import backbones`` stays free of OpenMMLab).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

import torch
import torch.nn.functional as F
import torchvision

FULL_MMCV_HINT = ("see README 'Full mmcv' (pip install mmcv==2.1.0 from source with MMCV_WITH_OPS=1, "
                  "setuptools<81 and -std=c++20); the stand-in backbones/mmcv_ext.py covers only nms, "
                  "softnms, nms_match, roi_align (avg), sigmoid/softmax focal loss and bbox_overlaps")


def _missing(name: str, detail: str = ""):
    return NotImplementedError(f"mmcv op '{name}'{detail} needs compiled mmcv: {FULL_MMCV_HINT}")


def _stub(name: str):
    def op(*args, **kwargs):
        raise _missing(name)
    op.__name__ = op.__qualname__ = name
    return op


# ---------------------------------------------------------------------------------------------- NMS
def _with_offset(boxes, offset):
    # mmcv's legacy offset=1 means width = x2 - x1 + 1: the same as shifting x2, y2 by one
    return boxes if not offset else torch.cat([boxes[:, :2], boxes[:, 2:] + offset], 1)


def _iou_one_to_many(box, boxes, areas, area, offset=0):
    lt = torch.maximum(box[:2], boxes[:, :2])
    rb = torch.minimum(box[2:], boxes[:, 2:])
    wh = (rb - lt + offset).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return inter / (area + areas - inter)


def nms(boxes, scores, iou_threshold, offset=0):
    """Kept indices in descending score order; suppress when IoU > threshold (as mmcv and torchvision)."""
    if boxes.numel() == 0:
        return boxes.new_zeros(0, dtype=torch.long)
    # float32 as mmcv's kernels (torchvision has no half NMS on CPU); keeps AMP outputs working
    boxes = _with_offset(boxes.float(), offset)
    return torchvision.ops.nms(boxes, scores.float(), float(iou_threshold))


def softnms(boxes, scores, dets, iou_threshold, sigma, min_score, method, offset):
    """Fills ``dets[:K]`` with (x1, y1, x2, y2, rescored score) and returns the K kept indices.
    ``method``: 0 naive, 1 linear, 2 gaussian. Ties between equal scores may pick another order than
    mmcv's CPU loop (which swaps discarded boxes to the end)."""
    n = boxes.size(0)
    if n == 0:
        return boxes.new_zeros(0, dtype=torch.long)
    boxes, sc = boxes.float(), scores.float().clone()
    areas = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)
    alive = torch.ones(n, dtype=torch.bool, device=boxes.device)
    keep = []
    while bool(alive.any()):
        i = int(torch.where(alive, sc, sc.new_tensor(float("-inf"))).argmax())
        dets[len(keep), :4] = boxes[i]
        dets[len(keep), 4] = sc[i]
        keep.append(i)
        alive[i] = False
        ovr = _iou_one_to_many(boxes[i], boxes, areas, areas[i], offset)
        if method == 0:
            weight = (ovr < iou_threshold).float()
        elif method == 1:
            weight = torch.where(ovr >= iou_threshold, 1 - ovr, torch.ones_like(ovr))
        else:
            weight = torch.exp(-(ovr * ovr) / sigma)
        sc = torch.where(alive, sc * weight, sc)
        alive &= sc >= min_score
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def nms_match(dets, iou_threshold):
    """Groups of indices: each kept box followed by the boxes it suppressed (IoU >= threshold),
    all in descending score order. Returns a list of lists of ints, as mmcv's C++."""
    dets = dets.float()
    boxes, scores = dets[:, :4], dets[:, 4]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = scores.argsort(descending=True, stable=True)
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=dets.device)
    groups = []
    for pos, i in enumerate(order.tolist()):
        if suppressed[i]:
            continue
        rest = order[pos + 1:]
        ovr = _iou_one_to_many(boxes[i], boxes[rest], areas[rest], areas[i])
        hit = rest[~suppressed[rest] & (ovr >= iou_threshold)]
        suppressed[hit] = True
        groups.append([i] + hit.tolist())
    return groups


def bbox_overlaps(bboxes1, bboxes2, ious, mode, aligned, offset):
    """Writes IoU (mode 0) or IoF (mode 1) into ``ious``: (rows,) when aligned, else (rows, cols)."""
    a, b = (bboxes1, bboxes2) if aligned else (bboxes1[:, None], bboxes2[None])
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt + offset).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    area1 = (a[..., 2] - a[..., 0] + offset) * (a[..., 3] - a[..., 1] + offset)
    if mode == 0:
        area2 = (b[..., 2] - b[..., 0] + offset) * (b[..., 3] - b[..., 1] + offset)
        ious.copy_(overlap / (area1 + area2 - overlap))
    else:
        ious.copy_(overlap / area1)


# ---------------------------------------------------------------------------------------- RoIAlign
def _roi_align(x, rois, aligned_height, aligned_width, spatial_scale, sampling_ratio, aligned):
    # torchvision's roi_align is the same Detectron kernel as mmcv's avg mode: rois (idx, x1, y1, x2, y2),
    # sampling_ratio <= 0 adaptive, aligned shifts by half a pixel, legacy mode clamps RoI size to >= 1
    return torchvision.ops.roi_align(x, rois.to(x.dtype), (aligned_height, aligned_width),
                                     float(spatial_scale), int(sampling_ratio), bool(aligned))


def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width, spatial_scale,
                      sampling_ratio, pool_mode, aligned):
    if pool_mode != 1:
        raise _missing("roi_align_forward", " with pool_mode='max'")
    output.copy_(_roi_align(input, rois, aligned_height, aligned_width, spatial_scale, sampling_ratio, aligned))


def roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, aligned_height, aligned_width,
                       spatial_scale, sampling_ratio, pool_mode, aligned):
    if pool_mode != 1:
        raise _missing("roi_align_backward", " with pool_mode='max'")
    # avg RoIAlign is linear in its input, so its gradient does not depend on the input values:
    # torchvision's autograd on a zero input gives it (mmcv's backward is not handed the input)
    x = grad_input.new_zeros(grad_input.shape, requires_grad=True)
    with torch.enable_grad():
        out = _roi_align(x, rois, aligned_height, aligned_width, spatial_scale, sampling_ratio, aligned)
        (grad,) = torch.autograd.grad(out, x, grad_output)
    grad_input.add_(grad)  # the C++ kernel accumulates into grad_input


# -------------------------------------------------------------------------------------- focal loss
def _class_weight(weight, target, num_classes):
    # per-class weight picked by each row's label; rows labelled background (num_classes, out of
    # range in mmcv's kernel) or ignored (< 0) are left unweighted
    padded = torch.cat([weight.float(), weight.new_ones(1, dtype=torch.float)])
    idx = torch.where((target >= 0) & (target < num_classes), target, torch.full_like(target, num_classes))
    return padded[idx].unsqueeze(1)


def _sigmoid_focal_terms(input, target):
    x = input.float()  # float32 math also for half inputs (AMP)
    num_classes = x.size(1)
    pos = target.unsqueeze(1) == torch.arange(num_classes, device=x.device)
    # log p and log(1 - p) from logsigmoid: exact where mmcv's clamped log(sigmoid) saturates
    p, log_p, log_1mp = torch.sigmoid(x), F.logsigmoid(x), F.logsigmoid(-x)
    return x, pos, p, log_p, log_1mp


def sigmoid_focal_loss_forward(input, target, weight, output, gamma, alpha):
    """``output`` (N, C) = per-element sigmoid focal loss; ``target`` (N,) holds class indices, where
    ``C`` (or any index outside 0..C-1) means background. Same math as torchvision.ops.sigmoid_focal_loss."""
    x, pos, p, log_p, log_1mp = _sigmoid_focal_terms(input, target)
    loss = torch.where(pos, -alpha * (1 - p).pow(gamma) * log_p, -(1 - alpha) * p.pow(gamma) * log_1mp)
    if weight.numel() > 0:
        loss = loss * _class_weight(weight, target, x.size(1))
    output.copy_(loss)


def sigmoid_focal_loss_backward(input, target, weight, grad_input, gamma, alpha):
    """``grad_input`` = d loss / d input, elementwise (mmcv's closed form)."""
    x, pos, p, log_p, log_1mp = _sigmoid_focal_terms(input, target)
    grad_pos = -alpha * (1 - p).pow(gamma) * (1 - p - gamma * p * log_p)
    grad_neg = -(1 - alpha) * p.pow(gamma) * (gamma * (1 - p) * log_1mp - p)
    grad = torch.where(pos, grad_pos, grad_neg)
    if weight.numel() > 0:
        grad = grad * _class_weight(weight, target, x.size(1))
    grad_input.copy_(grad)


def _softmax_focal_terms(softmax, target, weight):
    prob = softmax.float()
    valid = target >= 0  # negative labels are ignored
    pred = prob.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
    log_pred = pred.clamp(min=torch.finfo(torch.float32).tiny).log()
    scale = _class_weight(weight, target, prob.size(1)).squeeze(1) if weight.numel() > 0 else 1.0
    return prob, valid, pred, log_pred, scale


def softmax_focal_loss_forward(softmax, target, weight, output, gamma, alpha):
    """``softmax`` (N, C) holds probabilities; ``output`` (N,) = -alpha (1 - p_t)^gamma log p_t."""
    prob, valid, pred, log_pred, scale = _softmax_focal_terms(softmax, target, weight)
    loss = -alpha * (1 - pred).pow(gamma) * log_pred * scale
    output.copy_(torch.where(valid, loss, torch.zeros_like(loss)))


def softmax_focal_loss_backward(softmax, target, weight, buff, grad_input, gamma, alpha):
    """Gradient w.r.t. the logits that produced ``softmax``; ``buff`` (N,) holds d loss / d log-odds."""
    prob, valid, pred, log_pred, scale = _softmax_focal_terms(softmax, target, weight)
    b = alpha * (-(1 - pred).pow(gamma) + gamma * (1 - pred).pow(gamma - 1) * pred * log_pred) * scale
    b = torch.where(valid, b, torch.zeros_like(b))
    buff.copy_(b)
    onehot = F.one_hot(target.clamp(min=0), prob.size(1)).to(prob)
    grad_input.copy_(b.unsqueeze(1) * (onehot - prob) * valid.unsqueeze(1))


# ------------------------------------------------------------------------------------------- info
def get_compiler_version():
    return f"none (backbones.mmcv_ext stand-in on torchvision {torchvision.__version__})"


def get_compiling_cuda_version():
    return "not available"


OPS = {f.__name__: f for f in (
    nms, softnms, nms_match, bbox_overlaps, roi_align_forward, roi_align_backward,
    sigmoid_focal_loss_forward, sigmoid_focal_loss_backward, softmax_focal_loss_forward,
    softmax_focal_loss_backward, get_compiler_version, get_compiling_cuda_version)}


def _module_getattr(name):
    # every op name resolves (mmcv's load_ext asserts hasattr for each); private names stay missing
    # so importlib, pickle and friends see an ordinary module
    if name.startswith("_"):
        raise AttributeError(name)
    return _stub(name)


def fill_module(module: types.ModuleType) -> types.ModuleType:
    """Put the real ops and a PEP 562 ``__getattr__`` (stubs for all other names) into ``module``."""
    module.__dict__.update(OPS)
    module.__getattr__ = _module_getattr
    module.IS_STAND_IN = True
    return module


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``mmcv._ext`` only. Appended to the end of ``sys.meta_path``: the ordinary path finder
    runs first, so a real compiled ``mmcv/_ext*.so`` always wins."""

    is_binealbench_stand_in = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mmcv._ext":
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=__file__)

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        fill_module(module)


def install() -> None:
    """Make ``import mmcv._ext`` fall back to this stand-in. Idempotent; imports nothing from mmcv."""
    if not any(getattr(f, "is_binealbench_stand_in", False) for f in sys.meta_path):
        sys.meta_path.append(_StandInFinder())
