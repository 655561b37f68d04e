"""Synthetic data: one fixed random batch made once and reused every step (no splits to read)."""
from __future__ import annotations

from bench.data.sets import DataSet

# 100 classes, as CIFAR-100: the course's recipe
DATA_SET = DataSet("synthetic", classes=100, about="one fixed random batch, reused every step", order=0)
