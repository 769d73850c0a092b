"""Matching task: HPatches layout checks, the MMA / homography oracles, the kornia LocalFeature
wrapper, the training-view correspondence, precisions, and smoke runs through mmengine's Runner."""
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("kornia")

import tasks  # noqa: E402
from tasks import matching as M  # noqa: E402
from tasks.base import DataError  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HPATCHES = SHARED / "hpatches" if (SHARED / "hpatches").is_dir() else M.Matching.DEFAULT_DATA
TASK = tasks.get("matching")


@pytest.fixture(scope="module", autouse=True)
def _registered():
    M._register()


@pytest.fixture
def seq_copy(tmp_path):
    dst = tmp_path / "hp"
    shutil.copytree(M.Matching.DEFAULT_DATA, dst)
    return dst / "v_churchill"


def _raises(root, *needles):
    with pytest.raises(DataError) as e:
        TASK.validate_data(root)
    for n in needles:
        assert n in str(e.value), str(e.value)


# ---------------------------------------------------------------- data
def test_embedded_sample_and_real_data_validate():
    TASK.validate_data(M.Matching.DEFAULT_DATA)
    TASK.validate_data(HPATCHES)
    root = M.Matching.DEFAULT_DATA
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert size < 2_000_000 and (root / "SOURCE.md").is_file()
    assert [s.name for s in M.sequences(root)] == ["v_churchill"]
    assert M.sequences(root / "v_churchill") == [root / "v_churchill"]  # one sequence folder as root


@pytest.mark.skipif(not (SHARED / "hpatches" / "v_churchill").is_dir(), reason="../shared/data/hpatches not present")
def test_embedded_homographies_are_the_rescaled_originals():
    # independent of scale_matrix: map full-size points by H, then scale both ends by hand
    full = SHARED / "hpatches" / "v_churchill"
    s = 320 / 1024
    p = np.array([[100.0, 200.0], [700.0, 50.0], [400.0, 900.0]])
    for k in range(2, 7):
        h = np.loadtxt(full / f"H_1_{k}")
        q = np.c_[p, np.ones(3)] @ h.T
        q = q[:, :2] / q[:, 2:]
        hs = np.loadtxt(M.Matching.DEFAULT_DATA / "v_churchill" / f"H_1_{k}")
        ps = s * (p + 0.5) - 0.5
        qs = np.c_[ps, np.ones(3)] @ hs.T
        np.testing.assert_allclose(qs[:, :2] / qs[:, 2:], s * (q + 0.5) - 0.5, atol=1e-4)


def test_missing_root_and_no_sequences(tmp_path):
    _raises(tmp_path / "nope", "nope", "not found")
    (tmp_path / "empty").mkdir()
    _raises(tmp_path / "empty", "no HPatches sequence")


def test_missing_homography(seq_copy):
    (seq_copy / "H_1_4").unlink()
    _raises(seq_copy.parent, "H_1_4", "missing")


@pytest.mark.parametrize("text,why", [("1 0 0\n0 1 0\n", "got shape"), ("1 0 0\n0 one 0\n0 0 1\n", "one"),
                                      ("0 0 0\n0 0 0\n0 0 0\n", "singular"),
                                      ("1 0 0\n0 nan 0\n0 0 1\n", "entry (row 2, column 2) is nan")])
def test_malformed_homography(seq_copy, text, why):
    (seq_copy / "H_1_3").write_text(text)
    _raises(seq_copy.parent, "H_1_3", "3x3", why)


def test_unreadable_image(seq_copy):
    (seq_copy / "5.png").write_bytes(b"not a png at all")
    _raises(seq_copy.parent, "5.png", "cannot read image")


def test_image_too_small(seq_copy):
    from PIL import Image
    Image.new("RGB", (20, 16)).save(seq_copy / "2.png")
    _raises(seq_copy.parent, "2.png", "20x16")


def test_missing_reference_image(seq_copy):
    (seq_copy / "1.png").unlink()
    _raises(seq_copy.parent, "v_churchill", "reference image 1")


def test_dataset_rescales_homographies_exactly():
    item = M.HPatchesSequences(M.Matching.DEFAULT_DATA, max_side=160)[0]
    assert max(item["inputs"][1].shape[1:]) == 160 and item["inputs"][1].dtype == torch.uint8
    a = M.scale_matrix(0.5, 0.5)
    h = np.loadtxt(M.Matching.DEFAULT_DATA / "v_churchill" / "H_1_2")
    np.testing.assert_allclose(item["data_samples"]["H"][2].numpy(), a @ h @ np.linalg.inv(a), rtol=1e-9)


# ---------------------------------------------------------------- metric oracles
def test_mma_hand_computed():
    err = torch.tensor([0.0, 0.5, 1.5, 2.5, 4.0, 12.0])
    assert M.mma(err, (1, 2, 3, 5, 10)) == pytest.approx([2 / 6, 3 / 6, 4 / 6, 5 / 6, 5 / 6])
    assert M.mma(torch.zeros(0)) == [0.0] * 10  # no match: a failed pair


def test_empty_match_set_is_a_failure_not_a_crash():
    kp, d = torch.rand(10, 2) * 50, torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    for r in (M.evaluate_pair(kp[:0], d[:0], kp, d, torch.eye(3), (64, 64)),
              M.evaluate_pair(kp[:3], d[:3], kp[:3], d[:3], torch.eye(3), (64, 64))):  # < 4 matches: no RANSAC
        s = M.summarise([{**r, "keypoints": [0, 10]}])
        assert s["hom@1"] == 0.0 and math.isinf(r["mnn"]["corner_error"])
    empty = M.summarise([{**M.evaluate_pair(kp[:0], d[:0], kp, d, torch.eye(3), (64, 64)), "keypoints": [0, 10]}])
    assert empty["mma@3"] == 0.0 and empty["matches"] == 0


def _pair_image():
    return M.HPatchesSequences(M.Matching.DEFAULT_DATA, max_side=96)[0]["inputs"][1]


def _extractor(name):
    from mmengine.registry import MODELS
    if name == "sift":
        return MODELS.build(dict(type="SIFTModel", num_features=150)).eval().extract
    torch.manual_seed(0)
    return MODELS.build(dict(type="R2D2Model", width=1.0, body="fp32", head="fp32", num_features=150)).eval().extract


@pytest.mark.parametrize("name", ["sift", "r2d2-fp32-random"])
def test_identity_and_shifted_homography_oracle(name):
    """Same image twice: identity H gives MMA 1.0 at every threshold; declaring the true H to be
    a shift by (3, 4) puts every (correct) match exactly 5 px off: MMA@1..4 = 0, MMA@5..10 = 1."""
    img = _pair_image()
    kp, desc = _extractor(name)(img[None].float() / 255)
    size = (img.shape[2], img.shape[1])
    shift = torch.tensor([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]], dtype=torch.float64)
    same, off = (M.summarise([{**M.evaluate_pair(kp, desc, kp, desc, h, size), "keypoints": [len(kp)] * 2}])
                 for h in (torch.eye(3, dtype=torch.float64), shift))
    assert same["matches"] >= 20
    assert [same[f"mma@{t}"] for t in range(1, 11)] == [1.0] * 10
    assert same["hom@1"] == 1.0 and same["snn_mma@3"] == 1.0
    assert [off[f"mma@{t}"] for t in range(1, 11)] == [0.0] * 4 + [1.0] * 6
    assert off["hom@1"] == off["hom@3"] == 0.0


def test_evaluate_sequence_pairs_and_times():
    img = _pair_image()
    out = M.evaluate_sequence(lambda x: (torch.rand(0, 2), torch.rand(0, 8)), {1: img, 2: img, 3: img},
                              {2: torch.eye(3), 3: torch.eye(3)}, "i_x")
    assert [p["pair"] for p in out["pairs"]] == [2, 3] and len(out["image_ms"]) == 3
    s = M.summarise(out["pairs"], "i_")
    assert s["i_mma@3"] == 0.0 and s["i_pairs"] == 2 and s["i_keypoints"] == 0


# ---------------------------------------------------------------- kornia integration, network
def test_local_feature_is_kornia_and_matches_with_kornia():
    import kornia.feature as KF
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    net = MODELS.build(dict(type="R2D2Model", width=0.5, body="binary", head="int8", num_features=64)).eval()
    lf = M.r2d2_feature(net, 64)
    assert isinstance(lf, KF.LocalFeature)
    img = _pair_image()[None].float() / 255
    with torch.no_grad():
        lafs, resp, desc = lf(img)
        d_alone = lf.descriptor(img, lf.detector(img)[0])  # detector + descriptor as separate kornia modules
        out = KF.LocalFeatureMatcher(lf, KF.DescriptorMatcher("mnn"))({"image0": img, "image1": img})
    assert lafs.shape == (1, 64, 2, 3) and resp.shape == (1, 64) and desc.shape == (1, 64, 16)
    torch.testing.assert_close(d_alone, desc)
    filled = KF.laf_is_filled(lafs)[0]
    torch.testing.assert_close(desc[0][filled].norm(dim=1), torch.ones(int(filled.sum())))
    xy = KF.get_laf_center(lafs)[0][filled]
    assert (xy >= M.BORDER).all() and (xy[:, 0] < img.shape[3] - M.BORDER).all()
    assert len(out["keypoints0"]) > 10
    torch.testing.assert_close(out["keypoints0"], out["keypoints1"])  # same image: every match is itself


def test_detect_nms_topk_and_unfilled_slots():
    score = torch.zeros(1, 1, 20, 20)
    score[0, 0, 10, 7] = 0.9
    score[0, 0, 10, 8] = 0.5  # beside the peak: suppressed
    score[0, 0, 5, 12] = 0.7
    score[0, 0, 1, 1] = 1.0  # in the border
    xy, resp = M.detect(score, 4)
    assert xy[0, :2].tolist() == [[7.0, 10.0], [12.0, 5.0]] and resp[0].tolist() == pytest.approx([0.9, 0.7, 0, 0])
    assert (xy[0, 2:] == 0).all()


def _bits(model):
    return {n: (m.weight_quantizer.bits, m.act_quantizer.bits) for n, m in model.named_modules()
            if hasattr(m, "weight_quantizer")}


def test_precisions_and_full_resolution_topology():
    from mmengine.registry import MODELS
    nets = {b: MODELS.build(dict(type="R2D2Model", width=w, body=p, head="fp32" if p == "fp32" else "int8"))
            for b, w, p in (("binealnet", 1.0, "binary"), ("int8", 0.5, "int8"), ("fp32", 0.5, "fp32"))}
    bits = {b: _bits(n) for b, n in nets.items()}
    assert bits["binealnet"].keys() == bits["int8"].keys() == bits["fp32"].keys()  # same topology
    for name, wa in bits["binealnet"].items():
        assert wa == ((8, 8) if name.startswith("head.") else (1, 1)), name
    assert set(bits["int8"].values()) == {(8, 8)} and set(bits["fp32"].values()) == {(32, 32)}
    for n in nets.values():  # the stem stays float
        assert type(n.backbone.stem[0]) is torch.nn.Conv2d
    with torch.no_grad():
        d, rep, rel = nets["binealnet"].eval()(torch.rand(1, 3, 40, 52), mode="tensor")
    assert d.shape == (1, 32, 40, 52) and rep.shape == rel.shape == (1, 1, 40, 52)
    assert 0 < float(rep.min()) and float(rel.max()) < 1


def test_training_views_correspond_through_the_homography():
    """img2 = warp_perspective(img1, H): img2 sampled at H p equals img1 at p (the losses' convention)."""
    from kornia.geometry import warp_perspective
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    img = torch.stack([torch.sin(x / 5) + torch.cos(y / 7), x / 48, y / 48])[None]  # smooth: bilinear is exact enough
    h = M.random_homographies(1, 48, "cpu")
    img2 = warp_perspective(img, h, (48, 48), align_corners=True)
    p = torch.tensor([[20.0, 24.0], [30.0, 18.0], [24.0, 30.0]])
    q = M.transform(h[0], p)
    grid = torch.stack([(q[:, 0] + 0.5) / 48 * 2 - 1, (q[:, 1] + 0.5) / 48 * 2 - 1], -1).view(1, 1, -1, 2)
    got = torch.nn.functional.grid_sample(img2, grid, align_corners=False)[0, :, 0].t()
    want = img[0, :, p[:, 1].long(), p[:, 0].long()].t()
    torch.testing.assert_close(got, want, atol=0.05, rtol=0)


def test_descriptor_loss_prefers_consistent_descriptors():
    """A descriptor map that moves with the homography scores a far lower InfoNCE than noise."""
    from kornia.geometry import warp_perspective
    torch.manual_seed(0)
    h = M.random_homographies(1, 48, "cpu", max_angle=5, jitter=0.03)
    d1 = torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(torch.randn(1, 16, 48, 48), 3, 1, 1), dim=1)
    d2 = torch.nn.functional.normalize(warp_perspective(d1, h, (48, 48), align_corners=True), dim=1)
    rel = torch.full((1, 1, 48, 48), 0.5)
    good, _ = M.descriptor_losses(d1, d2, rel, rel, h)
    bad, _ = M.descriptor_losses(d1, torch.nn.functional.normalize(torch.randn_like(d2), dim=1), rel, rel, h)
    assert float(good) < 0.5 * float(bad)


# ---------------------------------------------------------------- configs and runs
def test_config_settings_and_cost_inputs():
    cfg = TASK.build_config("binealnet", M.Matching.DEFAULT_DATA, "short", "/tmp/unused", 0,
                            **TASK.options_with_defaults({}))
    assert cfg.bench.width == 2.0 and cfg.bench.head_precision == "int8" and cfg.bench.body_precision == "binary"
    assert cfg.model.type == "QuantScalesAfterInit"
    assert TASK.example_inputs("short")[0].shape == (1, 3, 240, 320)
    sift = TASK.build_config("sift", M.Matching.DEFAULT_DATA, "short", "/tmp/unused", 0,
                             **TASK.options_with_defaults({}))
    assert sift.train_dataloader is None and sift.optim_wrapper is None and sift.train_cfg is None
    with pytest.raises(DataError, match="nowhere"):
        TASK.build_config("int8", M.Matching.DEFAULT_DATA, "smoke", "/tmp/unused", 0,
                          **TASK.options_with_defaults({"train_images": "/nowhere"}))


def _run(cfg, train=True):
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    if train:
        runner.train()
    return runner, runner.test()


def test_smoke_train_and_test_binealnet(tmp_path):
    cfg = TASK.build_config("binealnet", M.Matching.DEFAULT_DATA, "smoke", tmp_path, 0,
                            **TASK.options_with_defaults({"width": 0.5, "num_features": 50,
                                                          "train_images": str(M.SAMPLE_TRAIN[0])}))
    runner, metrics = _run(cfg)
    for key in (TASK.METRIC["key"], *[k for k in TASK.SECONDARY_KEYS if "i_" not in k]):
        assert key in metrics, key
    assert metrics["hpatches/pairs"] == 5 and metrics["hpatches/v_pairs"] == 5 and 0 <= metrics["hpatches/mma@3"] <= 1
    assert metrics["hpatches/keypoints"] <= 50
    mma = [metrics[f"hpatches/mma@{t}"] for t in range(1, 11)]
    assert mma == sorted(mma)  # a looser threshold never counts fewer matches
    assert (tmp_path / "epoch_1.pth").is_file()
    out = TASK.forward_for_cost(runner.model, *TASK.example_inputs("smoke"))
    assert out[0].shape[-2:] == (64, 64)


def test_sift_reference_row_tests_only(tmp_path):
    cfg = TASK.build_config("sift", M.Matching.DEFAULT_DATA, "smoke", tmp_path, 0,
                            **TASK.options_with_defaults({"num_features": 64}))
    runner, metrics = _run(cfg, train=False)
    assert metrics["hpatches/mma@3"] > 0.2 and metrics["hpatches/keypoints"] > 5
    out = TASK.forward_for_cost(runner.model, torch.rand(2, 3, 48, 64))  # the runner's speed check uses batch 8
    assert len(out) == 2 and out[0][0].shape[-1] == 3
