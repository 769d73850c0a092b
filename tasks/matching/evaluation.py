"""Evaluation on HPatches: kornia's matchers and RANSAC, MMA and homography accuracy per pair,
summaries per sequence group, and the mmengine metric."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

MMA_THRESHOLDS = tuple(range(1, 11))
HOM_THRESHOLDS = (1, 3, 5)
RATIO = 0.8  # Lowe's ratio for match_snn
RANSAC_TH = 3.0  # px, kornia RANSAC inlier threshold
# 2,048 minimal samples (kornia's default is 20,480): the same budget for every method, ~0.15 s a call on CPU
RANSAC_BUDGET = dict(batch_size=512, max_iter=4)


def transform(h, xy):
    from kornia.geometry import transform_points
    return transform_points(h[None].to(xy.dtype), xy[None])[0]


def mma(err: torch.Tensor, thresholds=MMA_THRESHOLDS) -> list[float]:
    """Fraction of matches with reprojection error <= t, per t; 0 for an empty match set."""
    if err.numel() == 0:
        return [0.0] * len(thresholds)
    return [float((err <= t).float().mean()) for t in thresholds]


def corner_error(h_est, h_true, w, h) -> float:
    """Mean distance of image 1's four corners mapped by the estimated and the true homography."""
    c = torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]], dtype=torch.float64)
    return float((transform(h_est.double(), c) - transform(h_true.double(), c)).norm(dim=1).mean())


def evaluate_pair(kp1, d1, kp2, d2, h_true, size1, seed=0) -> dict:
    """MMA per threshold, match count and corner error for mnn and snn matching of one pair."""
    from kornia.feature import match_mnn, match_snn
    from kornia.geometry.ransac import RANSAC

    out = {}
    for name, match in (("mnn", match_mnn), ("snn", lambda a, b: match_snn(a, b, RATIO))):
        if len(d1) and len(d2):
            _, idx = match(d1, d2)
        else:
            idx = torch.zeros(0, 2, dtype=torch.long)
        m1, m2 = kp1[idx[:, 0]].double(), kp2[idx[:, 1]].double()
        err = (transform(h_true.double(), m1) - m2).norm(dim=1)
        cerr = math.inf
        if len(m1) >= 4:
            try:
                h_est, _ = RANSAC("homography", inl_th=RANSAC_TH, seed=seed, **RANSAC_BUDGET)(m1.float(), m2.float())
                if h_est.abs().sum() > 0 and torch.isfinite(h_est).all():
                    cerr = corner_error(h_est, h_true, *size1)
            except (RuntimeError, ValueError, torch.linalg.LinAlgError):  # degenerate sample: a miss
                pass
        out[name] = {"mma": mma(err), "matches": len(m1), "corner_error": cerr}
    return out


def evaluate_sequence(extract, images: dict, homs: dict, name: str) -> dict:
    """``extract(img 1x3xHxW float [0,1]) -> (keypoints Nx2, descriptors NxD)``; the sequence's
    pair results (``evaluate_pair`` + keypoint counts) and the extraction time of each image."""
    feats, times = {}, []
    for k, im in images.items():
        t0 = time.perf_counter()
        feats[k] = extract(im[None].float() / 255)
        times.append(time.perf_counter() - t0)
    size1 = (images[1].shape[2], images[1].shape[1])
    pairs = []
    for k, h in sorted(homs.items()):
        r = evaluate_pair(*feats[1], *feats[k], h, size1)
        r.update(seq=name, pair=k, keypoints=[len(feats[1][0]), len(feats[k][0])])
        pairs.append(r)
    return {"seq": name, "pairs": pairs, "image_ms": [t * 1e3 for t in times]}


def summarise(pairs: list[dict], prefix="") -> dict:
    """The metrics over a list of pair results (``evaluate_pair`` + keypoints)."""
    if not pairs:
        return {}
    res = {}
    for name, tag in (("mnn", ""), ("snn", "snn_")):
        mmas = np.array([p[name]["mma"] for p in pairs])
        for t, v in zip(MMA_THRESHOLDS, mmas.mean(0)):
            res[f"{prefix}{tag}mma@{t}"] = float(v)
        cerr = np.array([p[name]["corner_error"] for p in pairs])
        for e in HOM_THRESHOLDS:
            res[f"{prefix}{tag}hom@{e}"] = float((cerr <= e).mean())
        res[f"{prefix}{tag}matches"] = float(np.mean([p[name]["matches"] for p in pairs]))
    res[f"{prefix}keypoints"] = float(np.mean([n for p in pairs for n in p["keypoints"]]))
    res[f"{prefix}pairs"] = len(pairs)
    return res


def register(METRICS):
    from mmengine.evaluator import BaseMetric

    @METRICS.register_module()
    class HPatchesMetric(BaseMetric):
        default_prefix = "hpatches"

        def process(self, data_batch, data_samples):
            self.results.extend(data_samples)

        def compute_metrics(self, results):
            pairs = [p for r in results for p in r["pairs"]]
            res = summarise(pairs)
            for group in ("v", "i"):
                res.update(summarise([p for p in pairs if p["seq"].startswith(group + "_")], group + "_"))
            ms = [t for r in results for t in r["image_ms"]]
            res["ms_per_image"] = float(np.mean(ms)) if ms else float("nan")
            return res
