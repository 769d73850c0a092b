"""Feature matching: an R2D2-style dense detector/descriptor, evaluated on HPatches by MMA and
homography accuracy, with kornia doing the matching and the geometry.

Network (``R2D2Net``, L2-Net-like as R2D2's, kept small for CPU): full resolution throughout,
dilations instead of strides, so keypoints are located to the pixel. With ``c = 8 x width``:

    backbone: stem 3x3 conv 3->c (float, as BiNealNet's stem) + BN, then five 3x3 blocks
              (c, d1) (2c, d2) (2c, d2) (4c, d4) (4c, d4)  [channels, dilation], each
              conv -> BN -> + shortcut (identity, or the input repeated to the wider width) -> ReLU
              (no ReLU when activations are binary: the binary quantizer has its own PReLU);
    head:     ``desc`` 1x1 conv 4c->4c (the descriptor, L2-normalised) and ``score`` 1x1 conv
              4c->2 on the squared pre-normalisation descriptor (R2D2's trick) -> sigmoid ->
              repeatability and reliability maps.

Precision: ``binealnet`` = binary body with the last two output layers (``head.desc``,
``head.score``) at INT8, width 2.0; ``int8`` = everything INT8 but the stem, width 1.0; ``fp32``.
The same topology for all three.

kornia: ``R2D2Feature`` is a ``kornia.feature.LocalFeature`` (``R2D2Detector`` + ``R2D2Descriptor``;
its ``forward`` runs the network once for both), returning LAFs, responses and descriptors in
kornia's conventions. Keypoints: 3x3 non-maximum suppression on repeatability x reliability, a
4 px border dropped, top-k. Matching: ``kornia.feature.match_mnn`` (primary) and ``match_snn``
(Lowe's ratio test, 0.8); homography: ``kornia.geometry.ransac.RANSAC`` (inlier threshold 3 px, 2,048 samples, seeded).
The reference row ``sift`` is ``kornia.feature.SIFTFeature`` (grey image, RootSIFT) through the
same matchers and RANSAC; it has nothing to train.

Training (self-supervised): random crops of real images; the second view is the crop warped by a
random homography (rotation, scale, corner jitter; ``kornia.geometry.warp_perspective``), both
views photometrically jittered (``kornia.augmentation.ColorJitter``), so the dense correspondence
is known. Losses, summed:

* ``loss_desc``: InfoNCE (temperature 0.05) over correspondences on a grid (stride 8 px, random
  offset) in view 1: the positive is the warped point in view 2 (bilinear descriptor); negatives
  are the other grid points' correspondents (>= 8 px away) plus 8 hard ones on a 4 px ring
  around the positive. Both directions.
* ``loss_rel`` (R2D2's AP-weighted reliability with the InfoNCE probability of the true match,
  P, in place of AP): ``1 - (P * R + 0.5 * (1 - R))`` at the grid points of both views (P
  detached, so R learns where the descriptor can be trusted).
* ``loss_cosim`` + ``loss_peaky`` (R2D2's repeatability): 1 - cosine similarity of 8x8 patches
  (stride 4) of view 1's repeatability and view 2's warped back; 1 - mean(max - mean) of each
  repeatability map in 9x9 windows.

Evaluation (HPatches layout: ``ROOT/<seq>/{1..6}.ppm|png`` + ``H_1_k``, 3x3 in plain text mapping
pixels of image 1 to image k; ``ROOT`` may also be one sequence folder). Images larger than the
schedule's ``eval_max_side`` are downscaled (PIL bilinear, antialiased) and each H rescaled
exactly, ``H' = A_k H A_1^-1`` with ``A = diag(s_x, s_y, 1)`` in pixel-corner coordinates (pixel
centre x -> s (x + 0.5) - 0.5); thresholds are pixels of the evaluated images. For each pair
(1, k): MMA@t = the fraction of matches whose keypoint in image 1, mapped by the true H, lies
within t px of its match in image k (D2-Net's definition), averaged over pairs; a pair with no
match scores 0 (a failure, never a crash). Homography accuracy @e = the fraction of pairs whose
RANSAC estimate maps image 1's four corners within a mean e px of the true H's (fewer than 4
matches or a failed RANSAC: a miss). Also matches per pair, keypoints per image, ms per image
(feature extraction), and all of it for viewpoint (``v_``) and illumination (``i_``) sequences apart.

Files: ``data`` (HPatches and training images), ``network`` (the net, kornia wrapper, losses, models),
``evaluation`` (matching, RANSAC, MMA, the metric), ``task`` (schedules, options, config).
"""
from .data import (SAMPLE_TRAIN, HPatchesSequences, RandomCrops, read_homography, scale_matrix,  # noqa: F401
                   sequences, validate_data)
from .evaluation import (corner_error, evaluate_pair, evaluate_sequence, mma, summarise,  # noqa: F401
                         transform)
from .network import BORDER, descriptor_losses, detect, r2d2_feature, random_homographies  # noqa: F401
from .network import repeatability_losses  # noqa: F401
from .task import SCHEDULES, Matching, _register  # noqa: F401
