"""Published figures the tables print beside our measurements, each with its source."""

#: CIFAR-10 top-1 of the seed's ablation rows (``backbones.VARIANTS``) in the public BiNealNet
#: reproduction: ResNet, 400 epochs, batch 128, SGD lr 0.1 with SGDR (see the project brief)
SEED_CIFAR10_TOP1 = {
    "fp32": 0.9479, "binary-weights": 0.9485, "binary-activations": 0.922, "binary": 0.9112,
    "binary-ds3": 0.9214, "binary-ds3-clip": 0.9235, "binary-ds3-clip-scales-after": 0.9076,
    "binary-ds3-clip-lr0.1": 0.9102,
}
SEED_SOURCE = "public BiNealNet reproduction on CIFAR-10, 400 epochs (seed's log)"
