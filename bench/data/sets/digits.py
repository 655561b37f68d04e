"""scikit-learn's 8x8 digits, split once with a fixed seed (never --seed's)."""
from __future__ import annotations

import numpy as np

from bench.data.sets import DataSet
from bench.data.sets.split import Split

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, so the split never depends on --seed


# ---- digits --------------------------------------------------------------------------------
def load_digits_splits(data_dir: str | None = None) -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits, grey replicated to RGB, 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    x = np.repeat(x, 3, axis=-1)
    y = d.target.astype(np.int32)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    n_test = int(round(len(y) * DIGITS_TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return Split(x[train], y[train]), Split(x[test], y[test])


DATA_SET = DataSet("digits", classes=10, about="scikit-learn's 8x8 digits, offline", read=load_digits_splits, order=2)
