"""Shared test setup: quiet TensorFlow, the repo on sys.path, and cached model descriptions."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@functools.lru_cache(maxsize=None)
def cached_describe(name: str, num_classes: int = 100, image_size: int = 32, width: float = 1.0):
    """describe() is pure, and the 224x224 models are slow to build: build each once per session."""
    import models
    return models.describe(name, num_classes=num_classes, input_shape=(image_size, image_size, 3),
                           width=width)
