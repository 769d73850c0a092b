"""Six diagnostics for a CenterNet run of ours (not records; results/NOTES.md cites their output).

  frozen WORK_DIR OUT_DIR   retrain the run's config with every backbone parameter frozen at its
                            init (BatchNorm still normalises with batch statistics): from scratch,
                            the AP the float neck and head reach on random features, i.e. the floor
                            a trained backbone has to beat; with --init-from, what the neck and head
                            make of the pretrained features as they are. Prints the test metrics.
  lpft WORK_DIR OUT_DIR K   retrain the run's config with the backbone frozen (as in frozen) for
                            the first K epochs, then trained as usual (linear probe, then fine-tune):
                            does a head that has taken off on fixed features keep a run from
                            stalling? Prints the test metrics.
  flips WORK_DIR OUT_DIR    sign flips of the binary backbone's latent weights per optimizer step,
                            per stage, averaged over the second epoch of the run's config (the
                            first is the lr warm-up); trains those 2 epochs only.
  bblr WORK_DIR OUT_DIR MULT
                            retrain the run's config with the backbone's lr (every backbone
                            parameter group) multiplied by MULT, the rest unchanged; prints the
                            test metrics. Tests whether the backbone's step size stalls training.
  erf WORK_DIR [N]          effective receptive field of the trained run: |d neck_out[centre] /
                            d image| on N validation images (sign() backward is the training
                            estimator), radius holding 50% / 90% of that mass, median over images.
  trainap WORK_DIR OUT_DIR   the run's last checkpoint tested, with the test pipeline, on the images
                            it trained on (the training json) and on the validation ones: does a run
                            that scores nothing on validation find the people it trained on?

Run from the repository root: python scripts/diagnose_detection.py frozen work_dirs/detection/RUN /tmp/out
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import rundir  # noqa: E402
from bench.errors import BenchError  # noqa: E402


def _register():
    from mmengine.registry import init_default_scope

    from tasks import detection, recipes
    init_default_scope("mmdet")
    recipes._register()
    detection._register()


def _retraining_config(work_dir: Path, out_dir: Path, epochs=None):
    """The run's config, retrained into ``out_dir`` (optionally for fewer epochs), without validation."""
    _register()
    cfg = rundir.dumped_config(work_dir)
    cfg.work_dir = str(out_dir)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    if epochs:
        cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = cfg.train_cfg.max_epochs + 1
    return cfg


def _train_and_test(cfg, diagnostic: str, work_dir: Path):
    """Train ``cfg``, then print the test metrics as one JSON line named for the diagnostic."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    runner.train()
    print(json.dumps({"diagnostic": diagnostic, "run": work_dir.name, **runner.test()}))


def frozen(work_dir: Path, out_dir: Path):
    cfg = _retraining_config(work_dir, out_dir)
    cfg.model.backbone.freeze_weights = True  # the frozen-random row's switch (backbones/binealnet.py)
    _train_and_test(cfg, f"frozen {'pretrained' if cfg.model.backbone.get('init_cfg') else 'random'} backbone",
                    work_dir)


def lpft(work_dir: Path, out_dir: Path, k: int):
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    @HOOKS.register_module(force=True)
    class FreezeBackboneFirstEpochs(Hook):
        # set per epoch, after the optimizer is built, so the backbone stays in it: a parameter
        # without a gradient is skipped by the optimizer's step until it is unfrozen
        def before_train_epoch(self, runner):
            runner.model.backbone.requires_grad_(runner.epoch >= k)

    cfg = _retraining_config(work_dir, out_dir)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type="FreezeBackboneFirstEpochs")]
    _train_and_test(cfg, f"backbone frozen for the first {k} epochs", work_dir)


def bblr(work_dir: Path, out_dir: Path, mult: float):
    cfg = _retraining_config(work_dir, out_dir)
    cfg.optim_wrapper.paramwise_cfg["backbone_lr_mult"] = mult
    _train_and_test(cfg, f"backbone lr x{mult}", work_dir)


def trainap(work_dir: Path, out_dir: Path):
    from mmengine.runner import Runner
    _register()
    base = rundir.dumped_config(work_dir)
    ckpt = str(rundir.last_checkpoint(work_dir))
    for split, ann in (("train", base.train_dataloader.dataset.ann_file),
                       ("val", base.test_dataloader.dataset.ann_file)):
        cfg = base.copy()
        cfg.work_dir, cfg.load_from, cfg.resume = str(out_dir / split), ckpt, False
        cfg.test_dataloader.dataset.ann_file = ann
        cfg.test_evaluator.ann_file = str(Path(cfg.test_dataloader.dataset.data_root) / ann)
        metrics = Runner.from_cfg(cfg).test()
        print(json.dumps({"diagnostic": f"last checkpoint tested on the {split} images", "run": work_dir.name,
                          "checkpoint": Path(ckpt).name, **metrics}))


def flips(work_dir: Path, out_dir: Path, epochs: int = 2):
    import torch
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS
    from mmengine.runner import Runner

    from backbones.quantizers import BinaryWeightQuantizer
    cfg = _retraining_config(work_dir, out_dir, epochs)

    @HOOKS.register_module(force=True)
    class CountFlips(Hook):
        def before_train(self, runner):
            self.convs = [(n, m) for n, m in runner.model.backbone.named_modules()
                          if isinstance(getattr(m, "weight_quantizer", None), BinaryWeightQuantizer)]
            self.prev = {n: self._signs(m) for n, m in self.convs}
            self.steps = []

        @staticmethod
        @torch.no_grad()
        def _signs(m):  # the forward's sign(tanh(alpha * W)), from the quantizer itself
            return m.weight_quantizer.unit(m.weight)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            per_stage = {}
            for n, m in self.convs:
                s = self._signs(m)
                stage = n.split(".")[1] if n.startswith("stages") else "other"
                f, c = per_stage.get(stage, (0, 0))
                per_stage[stage] = (f + (s != self.prev[n]).sum().item(), c + s.numel())
                self.prev[n] = s
            self.steps.append({k: f / c for k, (f, c) in per_stage.items()})

        def after_train(self, runner):
            last = self.steps[-len(runner.train_dataloader):]  # the last epoch
            mean = {k: sum(d[k] for d in last) / len(last) for k in sorted(last[0])}
            print(json.dumps({"diagnostic": "latent sign flips per step", "run": work_dir.name,
                              "width": cfg.bench["width"], "steps": len(last),
                              "flip_fraction_by_stage": {k: float(f"{v:.2e}") for k, v in mean.items()}}))

    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type="CountFlips")]
    Runner.from_cfg(cfg).train()


def erf(work_dir: Path, n: int = 8):
    import numpy as np
    import torch
    from mmdet.registry import MODELS
    from PIL import Image

    from tasks import detection
    _register()
    cfg = rundir.dumped_config(work_dir)
    size = cfg.bench["input_size"]
    model = MODELS.build(cfg.model)
    ckpt = torch.load(rundir.last_checkpoint(work_dir), map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (detection.MEAN, detection.STD))
    val = json.loads(Path(cfg.test_evaluator.ann_file).read_text())["images"][:n]
    img_dir = Path(cfg.test_dataloader.dataset.data_root) / cfg.test_dataloader.dataset.data_prefix["img"]
    radii = []
    for im in val:
        # scaled by size/512 as the pipelines do, top-left on a black canvas of the training size
        pic = Image.open(img_dir / im["file_name"]).convert("RGB")
        pic = pic.resize((round(pic.width * size / 512), round(pic.height * size / 512)))
        a = np.asarray(pic, np.float32)[:size, :size]
        canvas = np.zeros((size, size, 3), np.float32)
        canvas[:a.shape[0], :a.shape[1]] = a
        x = ((torch.from_numpy(canvas).permute(2, 0, 1)[None] - mean) / std).requires_grad_(True)
        feat = model.neck(model.backbone(x))[0]
        c = feat.shape[-1] // 2
        feat[0, :, c, c].sum().backward()
        g = x.grad[0].abs().sum(0).numpy().ravel()
        yy, xx = np.mgrid[:size, :size]
        centre = (c + 0.5) * size / feat.shape[-1]
        r = np.hypot(yy - centre, xx - centre).ravel()
        order = np.argsort(r)
        mass = np.cumsum(g[order]) / g.sum()
        radii.append([r[order][np.searchsorted(mass, q)] for q in (0.5, 0.9)])
    r50, r90 = np.median(np.array(radii), axis=0)
    print(json.dumps({"diagnostic": "effective receptive field", "run": work_dir.name, "input": size, "images": n,
                      "r50_px": round(float(r50), 1), "r90_px": round(float(r90), 1),
                      "r50_of_input": round(float(r50) / size, 3), "r90_of_input": round(float(r90) / size, 3)}))


if __name__ == "__main__":
    #: mode -> (function, argument types); erf's last argument (N) is optional
    MODES = {"frozen": (frozen, (Path, Path)), "lpft": (lpft, (Path, Path, int)), "flips": (flips, (Path, Path)),
             "bblr": (bblr, (Path, Path, float)), "erf": (erf, (Path, int)),
             "trainap": (trainap, (Path, Path))}
    mode, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else (None, [])
    fn, types = MODES.get(mode, (None, ()))
    if fn is None or not len(types) - (mode == "erf") <= len(args) <= len(types):
        sys.exit(__doc__)
    try:
        fn(*(t(a) for t, a in zip(types, args)))
    except BenchError as e:
        sys.exit(f"diagnose_detection: error: {e}")
