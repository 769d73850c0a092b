"""BiNealNet: a ResNet-18/34 BasicBlock backbone whose precision and every seed variant are switches.

mmdet conventions: ``forward`` returns a tuple of stage features chosen by ``out_indices``;
``frozen_stages``, ``norm_eval`` and ``init_cfg`` behave as in mmdet's ResNet. Plain
``nn.Module`` so ``import backbones`` needs no OpenMMLab; ``backbones.openmmlab`` registers it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import QConv2d
from .precision import kinds
from .quantizers import make_act_quantizer, make_weight_quantizer
STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
STEMS = ("imagenet", "cifar")


class _QuantSpec:
    """Makes the quantizers for one conv from the network's switches (one place, used by every conv)."""

    def __init__(self, precision, alpha_dims, weight_estimator, act_estimator, clip_slope, int8_learned):
        self.w_kind, self.a_kind = kinds(precision)
        self.alpha_dims, self.w_est, self.a_est = alpha_dims, weight_estimator, act_estimator
        self.clip_slope, self.int8_learned = clip_slope, int8_learned

    @property
    def binary_acts(self):
        return self.a_kind == "binary"

    def conv(self, cin, cout, k, stride=1, scales_after=False, dilation=1):
        # int8 conv inputs follow a ReLU, so they are >= 0: unsigned range, zero point 0
        wq = make_weight_quantizer(self.w_kind, (cout, cin, k, k), self.alpha_dims, self.w_est)
        aq = make_act_quantizer(self.a_kind, cin, self.a_est, self.clip_slope, self.int8_learned, unsigned=True)
        binary_both = self.w_kind == self.a_kind == "binary"
        return QConv2d(cin, cout, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, bias=False,
                       weight_quantizer=wq, act_quantizer=aq, scales_after=scales_after and binary_both)

    def nonlinearity(self):
        # binary activations carry their own PReLU inside the quantizer; a ReLU before sign()
        # would make every input +1
        return nn.Identity() if self.binary_acts else nn.ReLU(inplace=True)


class BasicBlock(nn.Module):
    """ResNet BasicBlock. With ``double_shortcut`` (Bi-Real) each conv gets its own residual,
    which keeps real-valued information flowing past the binary convs."""

    def __init__(self, spec: _QuantSpec, cin, cout, stride, downsample_kernel, scales_after, double_shortcut,
                 dilation=1):
        super().__init__()
        self.conv1 = spec.conv(cin, cout, 3, stride, scales_after, dilation)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = spec.nonlinearity()
        self.conv2 = spec.conv(cout, cout, 3, 1, scales_after, dilation)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = spec.nonlinearity()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(spec.conv(cin, cout, downsample_kernel, stride, scales_after),
                                            nn.BatchNorm2d(cout))
        self.double_shortcut = double_shortcut

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        if self.double_shortcut:
            out = out + identity
        out = self.act1(out)
        mid = out
        out = self.bn2(self.conv2(out))
        out = out + (mid if self.double_shortcut else identity)
        return self.act2(out)


class BiNealNet(nn.Module):
    """Binary / INT8 / FP32 ResNet backbone.

    Args:
        depth: 18 or 34.
        width: channel multiplier (1.5 = the seed's BiNealNet, 2.0 = the paper's other tasks).
        precision: one of ``backbones.precision.PRECISIONS`` (convs of the four stages; the stem conv stays float).
        stem: 'imagenet' (7x7/2 + max-pool) or 'cifar' (3x3/1, no pool).
        downsample_kernel: 1 or 3, kernel of the shortcut conv where the shape changes.
        clip_slope: keep the PReLU slope of binary activations >= 0.
        scales_after: apply beta and gamma after the binary conv (its inputs stay exactly +-1).
        aux_lr_mult: lr multiplier for the quantizers' own parameters (a seed variant; read by the
            optimizer wrapper, ``tasks.common.optim_wrapper``).
        alpha_dims: 1, 2 or 4 (shape of alpha: per out channel, per (out, in), per element).
        weight_estimator, act_estimator: 'ste' or 'approx' gradient of sign.
        double_shortcut: Bi-Real per-conv residuals; default True when activations are binary.
        int8_learned: LSQ-style learned activation scales for INT8 (else running max).
        strides, dilations: per stage, as mmdet / mmseg's ResNet (FCN-D8: strides (1, 2, 1, 1),
            dilations (1, 1, 2, 4)); dilated binary convs pad with -1 as every binary conv.
        out_indices, frozen_stages, norm_eval, init_cfg: as in mmdet's ResNet.
        freeze_weights: no parameter learns, while BatchNorm still normalises with batch statistics
            (unlike frozen_stages): random features, the floor of a task's ``frozen-random`` row.
        pretrained, num_stages, style, norm_cfg, contract_dilation: mmdet / mmseg ResNet's arguments, so
            that a stock ResNet-18/34 config runs with only its backbone ``type`` changed. ``pretrained``
            is ResNet's deprecated alias of ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (mmseg's
            EncoderDecoder passes its own down); the others have one meaning here (4 stages, BatchNorm,
            BasicBlocks, which ``style`` and ``contract_dilation`` do not change).
    """

    def __init__(self, depth=18, width=1.0, precision="binary", stem="imagenet", in_channels=3,
                 downsample_kernel=1, clip_slope=True, scales_after=False, aux_lr_mult=1.0, alpha_dims=1,
                 weight_estimator="ste", act_estimator="approx", double_shortcut=None, int8_learned=False,
                 strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1), out_indices=(0, 1, 2, 3), frozen_stages=-1,
                 norm_eval=False, init_cfg=None, freeze_weights=False, pretrained=None, num_stages=4, style="pytorch",
                 norm_cfg=None, contract_dilation=False):
        super().__init__()
        if pretrained is not None:
            if init_cfg:
                raise ValueError("give init_cfg or pretrained (its deprecated alias), not both")
            init_cfg = dict(type="Pretrained", checkpoint=pretrained)
        if num_stages != 4:
            raise ValueError(f"BiNealNet has 4 stages; got num_stages={num_stages}")
        if norm_cfg is not None and norm_cfg.get("type") not in ("BN", "SyncBN", "BN2d"):
            raise ValueError(f"BiNealNet normalises with BatchNorm; got norm_cfg={norm_cfg}")
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}; got {depth}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}; got {stem!r}")
        if downsample_kernel not in (1, 3):
            raise ValueError(f"downsample_kernel must be 1 or 3; got {downsample_kernel}")
        if len(strides) != 4 or len(dilations) != 4 or min(strides) < 1 or min(dilations) < 1:
            raise ValueError(f"strides and dilations need 4 positive entries (one per stage); got {strides}, {dilations}")
        if not set(out_indices) <= {0, 1, 2, 3}:
            raise ValueError(f"out_indices must be stage indices 0..3; got {out_indices}")
        spec = _QuantSpec(precision, alpha_dims, weight_estimator, act_estimator, clip_slope, int8_learned)
        if double_shortcut is None:
            double_shortcut = spec.binary_acts
        self.precision, self.width, self.depth = precision, width, depth
        self.out_indices, self.frozen_stages, self.norm_eval = tuple(out_indices), frozen_stages, norm_eval
        self.aux_lr_mult, self.init_cfg = aux_lr_mult, init_cfg
        self.strides, self.dilations = tuple(strides), tuple(dilations)

        # the layers draw their init from a stream of their own, seeded by one draw of the global one: the
        # modules built after the backbone (neck, head) then start from the same weights for every
        # preset and width at one seed, so the precisions' runs differ in the backbone alone
        own_seed = int(torch.randint(2**62, (1,), device="cpu").item())  # cpu: also under a meta device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(own_seed)
            self._build(spec, stem, in_channels, depth, width, strides, dilations, downsample_kernel, scales_after,
                        double_shortcut)
        self._freeze_stages()
        if freeze_weights:
            self.requires_grad_(False)  # the optimizer's groups skip them (tasks/recipes.py)

    def _build(self, spec, stem, in_channels, depth, width, strides, dilations, downsample_kernel, scales_after,
               double_shortcut):
        base = int(round(64 * width))
        self.channels = [base * 2 ** i for i in range(4)]
        if stem == "imagenet":
            conv = nn.Conv2d(in_channels, base, 7, stride=2, padding=3, bias=False)
            self.stem = nn.Sequential(conv, nn.BatchNorm2d(base), spec.nonlinearity(), nn.MaxPool2d(3, 2, 1))
        else:
            conv = nn.Conv2d(in_channels, base, 3, stride=1, padding=1, bias=False)
            self.stem = nn.Sequential(conv, nn.BatchNorm2d(base), spec.nonlinearity())
        cin = base
        self.stages = nn.ModuleList()
        for i, (n, cout) in enumerate(zip(STAGE_BLOCKS[depth], self.channels)):
            blocks = [BasicBlock(spec, cin if j == 0 else cout, cout, strides[i] if j == 0 else 1,
                                 downsample_kernel, scales_after, double_shortcut, dilations[i]) for j in range(n)]
            self.stages.append(nn.Sequential(*blocks))
            cin = cout
        self.out_channels = tuple(self.channels[i] for i in self.out_indices)
        self._init_default()

    # ------------------------------------------------------------------ init
    def _init_default(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # scales follow the re-initialised weights
            if isinstance(m, QConv2d):
                m.reset_quantizer_scales()

    def init_weights(self):
        """mmengine calls this. ``init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix='backbone.')``
        loads our own checkpoint (a classification run; ``prefix`` None: the checkpoint's keys as they
        are); mismatched shapes are reported, not fatal."""
        cfg = self.init_cfg
        if not cfg or cfg.get("type") != "Pretrained":
            return
        from .checkpoint import load_backbone_weights
        load_backbone_weights(self, cfg["checkpoint"], cfg.get("prefix"))

    # ------------------------------------------------------------------ mmdet behaviour
    def _freeze_stages(self):
        frozen = ([self.stem] if self.frozen_stages >= 0 else []) + list(self.stages[:max(self.frozen_stages, 0)])
        for m in frozen:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
