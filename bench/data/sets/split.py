"""One split of a data set as numpy arrays: uint8 NHWC images and int labels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    images: np.ndarray  # uint8, N x H x W x 3
    labels: np.ndarray  # int32, N
