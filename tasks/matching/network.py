"""The R2D2-style network (body, heads), its kornia ``LocalFeature`` wrapper, the training views and
losses, and the mmengine models (``R2D2Model``, the ``SIFTModel`` reference row)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import common
from .evaluation import evaluate_sequence, transform

BORDER = 4  # px without keypoints (padding effects)
BASE_CHANNELS = 8
# (channel multiple of c, dilation) of the body's blocks
BODY = ((1, 1), (2, 2), (2, 2), (4, 4), (4, 4))
MEAN, STD = tuple(m / 255 for m in common.IMAGENET_MEAN), tuple(s / 255 for s in common.IMAGENET_STD)


class Block(nn.Module):
    def __init__(self, cin, cout, dilation, w, a):
        super().__init__()
        from backbones.layers import qconv
        self.conv = qconv(cin, cout, 3, padding=dilation, dilation=dilation, bias=False, w=w, a=a,
                          a_unsigned=a == "int8")  # int8 inputs follow a ReLU: >= 0
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.Identity() if a == "binary" else nn.ReLU(inplace=True)
        self.repeat = cout // cin

    def forward(self, x):
        short = x if self.repeat == 1 else x.repeat(1, self.repeat, 1, 1)
        return self.act(self.bn(self.conv(x)) + short)


class Backbone(nn.Module):
    def __init__(self, c, prec):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.Identity() if prec == "binary" else nn.ReLU(inplace=True))
        blocks, cin = [], c
        for mult, dil in BODY:
            blocks.append(Block(cin, c * mult, dil, prec, prec))
            cin = c * mult
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = cin

    def forward(self, x):
        return self.blocks(self.stem(x))


class Head(nn.Module):
    def __init__(self, cin, dim, prec):
        super().__init__()
        from backbones.layers import qconv
        self.desc = qconv(cin, dim, 1, w=prec, a=prec)  # signed input (binary body has no ReLU)
        self.score = qconv(dim, 2, 1, w=prec, a=prec, a_unsigned=prec == "int8")  # squared: >= 0

    def forward(self, f):
        d = self.desc(f)
        s = torch.sigmoid(self.score(d * d))
        return F.normalize(d, dim=1), s[:, :1], s[:, 1:]


def dense_maps(model, img):
    """(descriptors BxDxHxW, repeatability Bx1xHxW, reliability Bx1xHxW) of images in [0, 1]."""
    mean = img.new_tensor(MEAN).view(1, 3, 1, 1)
    std = img.new_tensor(STD).view(1, 3, 1, 1)
    return model.head(model.backbone((img - mean) / std))


def sample_desc(desc, xy):
    """Bilinear descriptors (N x D, re-normalised) of a 1xDxHxW map at pixel-centre coords xy (N x 2)."""
    h, w = desc.shape[-2:]
    g = torch.stack([(xy[:, 0] + 0.5) / w * 2 - 1, (xy[:, 1] + 0.5) / h * 2 - 1], -1).view(1, 1, -1, 2)
    return F.normalize(F.grid_sample(desc, g.to(desc.dtype), align_corners=False)[0, :, 0].t(), dim=1)


def detect(score, num_features, border=BORDER):
    """Top-k 3x3 local maxima of a Bx1xHxW score: (xy BxNx2, responses BxN); slots beyond the
    maxima found are zero (kornia's unfilled-slot convention)."""
    b, _, h, w = score.shape
    peak = (score == F.max_pool2d(score, 3, 1, 1)) & (score > 0)
    keep = torch.zeros_like(peak)
    keep[..., border:h - border, border:w - border] = True
    s = torch.where(peak & keep, score, torch.zeros_like(score)).flatten(1)
    k = min(num_features, s.shape[1])
    val, idx = s.topk(k, dim=1)
    xy = torch.stack([idx % w, idx // w], -1).to(score.dtype)
    filled = val > 0
    return xy * filled[..., None], val * filled


class R2D2Detector(nn.Module):
    """kornia detector: ``forward(img, mask=None) -> (lafs BxNx2x3, responses BxN)``."""

    def __init__(self, model, num_features=1000, scale=8.0):
        super().__init__()
        self.model, self.num_features, self.scale = model, num_features, scale

    def from_maps(self, rep, rel, mask=None):
        from kornia.feature import laf_from_center_scale_ori
        score = rep * rel
        if mask is not None:
            score = score * mask
        xy, resp = detect(score, self.num_features)
        scale = (resp > 0).to(xy.dtype)[..., None, None] * self.scale
        return laf_from_center_scale_ori(xy, scale, torch.zeros_like(resp)[..., None]), resp

    def forward(self, img, mask=None):
        _, rep, rel = dense_maps(self.model, img)
        return self.from_maps(rep, rel, mask)


class R2D2Descriptor(nn.Module):
    """kornia descriptor: ``forward(img, lafs) -> descriptors BxNxD`` sampled at the LAF centres."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @staticmethod
    def from_map(desc, lafs):
        from kornia.feature import get_laf_center
        xy = get_laf_center(lafs)
        return torch.stack([sample_desc(desc[i:i + 1], xy[i]) for i in range(len(desc))])

    def forward(self, img, lafs):
        return self.from_map(dense_maps(self.model, img)[0], lafs)


def _r2d2_feature_cls():
    from kornia.feature import LocalFeature

    class R2D2Feature(LocalFeature):
        """``LocalFeature(R2D2Detector, R2D2Descriptor)`` whose forward runs the network once."""

        def __init__(self, model, num_features=1000):
            super().__init__(R2D2Detector(model, num_features), R2D2Descriptor(model))

        def forward(self, img, mask=None):
            desc, rep, rel = dense_maps(self.detector.model, img)
            lafs, resp = self.detector.from_maps(rep, rel, mask)
            return lafs, resp, self.descriptor.from_map(desc, lafs)

    return R2D2Feature


def r2d2_feature(model, num_features=1000):
    """A ``kornia.feature.LocalFeature`` over a trained ``R2D2Model`` (images BxCxHxW in [0, 1])."""
    return _r2d2_feature_cls()(model, num_features)


# ---------------------------------------------------------------- training views and losses
def random_homographies(n, size, device, max_angle=15.0, scale=(0.8, 1.2), jitter=0.1):
    """n random homographies of a size x size image: rotation and scale about the centre, then
    each corner moved by up to ``jitter`` x size (kornia.geometry.get_perspective_transform)."""
    from kornia.geometry import get_perspective_transform
    s = size - 1.0
    src = torch.tensor([[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]], device=device).expand(n, 4, 2)
    ang = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_angle)
    sc = scale[0] + torch.rand(n, device=device) * (scale[1] - scale[0])
    rot = torch.stack([torch.cos(ang), -torch.sin(ang), torch.sin(ang), torch.cos(ang)], -1).view(n, 2, 2)
    c = s / 2
    dst = (src - c) @ (rot * sc.view(n, 1, 1)).transpose(1, 2) + c
    dst = dst + (torch.rand(n, 4, 2, device=device) * 2 - 1) * jitter * size
    return get_perspective_transform(src, dst)


def descriptor_losses(d1, d2, rel1, rel2, h, stride=8, margin=4, tau=0.05, kappa=0.5, ring=4.0):
    """InfoNCE on grid correspondences (see the module doc) and the AP-style reliability loss."""
    _, _, hh, ww = d1.shape
    ldesc, lrel, n = d1.new_zeros(()), d1.new_zeros(()), 0
    angles = torch.arange(8, device=d1.device) * (math.pi / 4)
    offsets = torch.stack([angles.cos(), angles.sin()], -1) * ring
    for b in range(len(d1)):
        ox, oy = (int(v) for v in torch.randint(stride, (2,)))
        ys, xs = torch.meshgrid(torch.arange(margin + oy, hh - margin, stride, device=d1.device),
                                torch.arange(margin + ox, ww - margin, stride, device=d1.device), indexing="ij")
        p = torch.stack([xs.flatten(), ys.flatten()], -1).float()
        q = transform(h[b], p)
        ok = (q[:, 0] >= margin) & (q[:, 0] <= ww - 1 - margin) & (q[:, 1] >= margin) & (q[:, 1] <= hh - 1 - margin)
        p, q = p[ok], q[ok]
        if len(p) < 2:
            continue
        a = d1[b, :, p[:, 1].long(), p[:, 0].long()].t()
        pos = sample_desc(d2[b:b + 1], q)
        hard = sample_desc(d2[b:b + 1], (q[:, None] + offsets).reshape(-1, 2)).view(len(q), 8, -1)
        logits = torch.cat([a @ pos.t(), (hard @ a[:, :, None])[..., 0]], 1) / tau
        target = torch.arange(len(p), device=d1.device)
        back = (pos @ a.t()) / tau
        ldesc = ldesc + 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(back, target))
        prob = torch.cat([logits.softmax(1)[target, target], back.softmax(1)[target, target]]).detach()
        r = torch.cat([rel1[b, 0, p[:, 1].long(), p[:, 0].long()],
                       F.grid_sample(rel2[b:b + 1], torch.stack([(q[:, 0] + 0.5) / ww * 2 - 1,
                                                                 (q[:, 1] + 0.5) / hh * 2 - 1], -1).view(1, 1, -1, 2),
                                     align_corners=False).view(-1)])
        lrel = lrel + (1 - (prob * r + kappa * (1 - r))).mean()
        n += 1
    n = max(n, 1)
    return ldesc / n, lrel / n


def repeatability_losses(rep1, rep2, h, patch=8):
    """R2D2's cosim (view 2's map warped back, valid pixels only) and peaky losses."""
    from kornia.geometry import warp_perspective
    size = rep1.shape[-2:]
    hinv = torch.linalg.inv(h)
    back = warp_perspective(rep2, hinv, size, align_corners=True)
    valid = warp_perspective(torch.ones_like(rep2), hinv, size, align_corners=True) > 0.999
    v = valid.float()
    p1 = F.unfold(rep1 * v, patch, stride=patch // 2)
    p2 = F.unfold(back * v, patch, stride=patch // 2)
    full = F.unfold(v, patch, stride=patch // 2).mean(1) > 0.5
    cos = (F.normalize(p1, dim=1) * F.normalize(p2, dim=1)).sum(1)
    cosim = 1 - cos[full].mean() if full.any() else rep1.sum() * 0
    k = patch + 1
    peaky = sum(1 - (F.max_pool2d(r, k, 1, k // 2) - F.avg_pool2d(r, k, 1, k // 2)).mean() for r in (rep1, rep2)) / 2
    return cosim, peaky


# ---------------------------------------------------------------- mmengine models
def register(MODELS):
    from mmengine.model import BaseModel


    class _MatchingModel(BaseModel):
        """predict: one HPatches sequence per item (see ``evaluate_sequence``)."""

        def extract(self, img):
            raise NotImplementedError

        @torch.no_grad()
        def predict(self, inputs, data_samples):
            # one result per sequence (mmengine's metric keeps as many results as dataset items)
            return [evaluate_sequence(self.extract, images, {k: h.cpu() for k, h in meta["H"].items()}, meta["name"])
                    for images, meta in zip(inputs, data_samples)]

    @MODELS.register_module()
    class R2D2Model(_MatchingModel):
        def __init__(self, width=1.0, body="fp32", head="fp32", num_features=1000, data_preprocessor=None):
            super().__init__(data_preprocessor=data_preprocessor)
            from backbones.layers import reset_quantizer_scales
            c = max(1, round(BASE_CHANNELS * width))
            self.backbone = Backbone(c, body)
            self.head = Head(self.backbone.out_channels, self.backbone.out_channels, head)
            self.num_features = num_features
            reset_quantizer_scales(self)

        def extract(self, img):
            lafs, _, desc = r2d2_feature(self, self.num_features)(img.to(self.head.desc.weight.device))
            from kornia.feature import get_laf_center, laf_is_filled
            keep = laf_is_filled(lafs)[0]
            return get_laf_center(lafs)[0][keep].cpu(), desc[0][keep].cpu()

        def _views(self, img):
            from kornia.augmentation import ColorJitter
            from kornia.geometry import warp_perspective
            n, _, s, _ = img.shape
            h = random_homographies(n, s, img.device)
            img2 = warp_perspective(img, h, (s, s), align_corners=True)
            jitter = ColorJitter(0.3, 0.3, 0.2, 0.03, p=1.0)
            return jitter(img), jitter(img2), h

        def forward(self, inputs, data_samples=None, mode="tensor"):
            if mode == "predict":
                return self.predict(inputs, data_samples)
            img = inputs.float() / 255 if inputs.dtype == torch.uint8 else inputs
            if mode == "tensor":
                return dense_maps(self, img)
            v1, v2, h = self._views(img)
            d, rep, rel = dense_maps(self, torch.cat([v1, v2]))
            n = len(img)
            ldesc, lrel = descriptor_losses(d[:n], d[n:], rel[:n], rel[n:], h)
            cosim, peaky = repeatability_losses(rep[:n], rep[n:], h)
            return {"loss_desc": ldesc, "loss_rel": lrel, "loss_cosim": cosim, "loss_peaky": peaky}

    @MODELS.register_module()
    class SIFTModel(_MatchingModel):
        """kornia's SIFT (grey, RootSIFT descriptors) through the same matchers and RANSAC."""

        def __init__(self, num_features=1000, data_preprocessor=None):
            super().__init__(data_preprocessor=data_preprocessor)
            from kornia.feature import SIFTFeature
            self.sift = SIFTFeature(num_features=num_features, upright=False, rootsift=True)
            self.sift.requires_grad_(False)  # fixed kernels, nothing to train

        def extract(self, img):
            from kornia.color import rgb_to_grayscale
            from kornia.feature import get_laf_center, laf_is_filled
            lafs, _, desc = self.sift(rgb_to_grayscale(img))
            keep = laf_is_filled(lafs)[0]
            return get_laf_center(lafs)[0][keep], desc[0][keep]

        def forward(self, inputs, data_samples=None, mode="tensor"):
            if mode == "predict":
                return self.predict(inputs, data_samples)
            from kornia.color import rgb_to_grayscale
            img = inputs.float() / 255 if inputs.dtype == torch.uint8 else inputs
            # kornia's SIFT takes one image at a time
            return [self.sift(rgb_to_grayscale(x[None])) for x in img]
