"""The standard ImageNet preprocessing's decisions, made once in numpy float64 for both backends'
pipelines: the random-resized crop's box and the flip of an image (torchvision's
RandomResizedCrop: scale 0.08-1, log-uniform aspect ratio 3/4-4/3, 10 attempts, then the
centre-crop fallback), drawn from (seed, epoch, image index) alone, so a seed makes the same
decisions whichever backend, worker or order reads the image; and the evaluation box (the central
87.5% of the short side, as tf_cnn_benchmarks' and the models garden's eval crop). Only the
pixels (decoder, resize filter) differ between the backends (docs/data.md)."""
from __future__ import annotations

import math

import numpy as np

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10
EVAL_FRACTION = 0.875  # resize the short side to size / 0.875, then crop size: the same pixels
# ImageNet's per-channel mean and std (of /255 pixels): what --normalize uses on the streaming sets,
# whose own statistics would take a pass over every image
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
TRAIN, EVAL = "inception_crop_flip", "center_crop"  # the row's `preprocess` names


def decision(seed: int, epoch: int, index: int, height: int, width: int) -> np.ndarray:
    """(top, left, crop height, crop width, flip) of image `index` in `epoch`, as int64."""
    rng = np.random.default_rng([int(seed), int(epoch), int(index)])
    draws = rng.random((ATTEMPTS, 4))  # scale, log-ratio, top, left: all drawn, used or not
    flip = int(rng.random() < 0.5)
    area = float(height) * float(width)
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for scale_u, ratio_u, top_u, left_u in draws:
        target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * scale_u)
        ratio = math.exp(log_lo + (log_hi - log_lo) * ratio_u)
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(math.floor(top_u * (height - h + 1)))
            left = int(math.floor(left_u * (width - w + 1)))
            return np.array([top, left, h, w, flip], np.int64)
    in_ratio = width / height  # the fallback: the whole image, clamped to the ratio range, centred
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        h, w = height, width
    return np.array([(height - h) // 2, (width - w) // 2, h, w, flip], np.int64)


def eval_box(height: int, width: int) -> np.ndarray:
    """(top, left, side, side, 0): the central square of EVAL_FRACTION of the short side."""
    side = max(1, int(round(min(height, width) * EVAL_FRACTION)))
    return np.array([(height - side) // 2, (width - side) // 2, side, side, 0], np.int64)


def epoch_order(seed: int, epoch: int, shard: int, index: np.ndarray) -> np.ndarray:
    """A shard's images in the order one epoch reads them (the host pipeline, and the TensorFlow
    pipeline of an image folder, read the same order for a seed)."""
    return np.random.default_rng([int(seed), int(epoch), int(shard), 1]).permutation(index)
