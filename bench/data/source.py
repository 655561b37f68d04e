"""A run's input: `read_data` reads and checks the chosen data set with numpy before any framework starts, `load_data` finishes it into a `DataSource` whose pipelines each backend consumes (tf.data per shard for TensorFlow, host numpy batches for JAX). Every source yields uint8 NHWC images and int labels, so bad data is a one-line BenchInputError, not a crash deep inside a framework."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from bench.data.arrays import DataSource, synthetic_arrays
from bench.data.sets import DATA_SETS
from bench.data.sets.split import Split
from bench.data.stream import StreamSource, stream_source
from bench.errors import BenchInputError

if TYPE_CHECKING:
    from bench.config.schema import RunConfig

log = logging.getLogger(__name__)

__all__ = ["DataSource", "StreamSource", "read_data", "load_data", "synthetic_arrays"]


def _resize(split: Split, size: int) -> Split:
    """Bilinear resize through Keras, so it runs on whichever backend this process uses."""
    if split.images.shape[1] == size and split.images.shape[2] == size:
        return split
    from keras import ops

    x = ops.convert_to_numpy(ops.image.resize(split.images.astype(np.float32), (size, size),
                                              interpolation="bilinear"))
    return Split(np.clip(np.rint(x), 0, 255).astype(np.uint8), split.labels)


def _check_labels(split: Split, num_classes: int, where: str) -> None:
    if len(split.labels) == 0:
        raise BenchInputError(f"{where} split is empty")
    lo, hi = int(split.labels.min()), int(split.labels.max())
    if lo < 0 or hi >= num_classes:
        raise BenchInputError(f"{where} labels out of range: found labels in [{lo}, {hi}] "
                              f"but num_classes={num_classes}")


def read_data(cfg: "RunConfig") -> DataSource:
    """Read and validate the configured data set at its native size, with numpy alone: bad
    data is found before any framework starts. `cfg.num_classes` must be resolved."""
    src = DataSource(cfg.data, cfg.num_classes, cfg.image_size, normalize=cfg.normalize,
                     augment=cfg.augment, seed=cfg.seed, data_workers=cfg.data_workers)
    data_set = DATA_SETS.get(cfg.data)
    if data_set is None:
        raise BenchInputError(f"unknown data set: data={cfg.data!r}")
    if not data_set.real:
        return src
    if data_set.streaming:
        return _read_stream(cfg, src, data_set.stream(cfg.data_dir))
    train, test = data_set.read(cfg.data_dir)
    _check_labels(train, cfg.num_classes, f"{cfg.data} train")
    _check_labels(test, cfg.num_classes, f"{cfg.data} test")
    src.train, src.test = train, test
    return src


def _read_stream(cfg: "RunConfig", src: DataSource, stream) -> StreamSource:
    """A streaming set's index, its labels checked where they were seen (every class folder; each
    TFRecord shard's first record), its evaluation split where accuracy mode needs one."""
    if stream.seen_labels is not None and len(stream.seen_labels):
        labels = stream.seen_labels - cfg.label_offset
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= cfg.num_classes:
            raise BenchInputError(f"{cfg.data} labels out of range: found labels in [{lo}, {hi}] (after "
                                  f"label_offset={cfg.label_offset}) but num_classes={cfg.num_classes}")
    if cfg.accuracy_mode and not len(stream.test):
        raise BenchInputError(f"accuracy mode (--epochs) needs an evaluation split, and {cfg.data} in "
                              f"data_dir={cfg.data_dir} has none (docs/data.md: the split rule)")
    return stream_source(src, stream, label_offset=cfg.label_offset, workers=cfg.data_workers,
                         max_bad_images=cfg.max_bad_images)


def load_data(cfg: "RunConfig", source: DataSource | None = None) -> DataSource:
    """The configured data set, validated and resized to cfg.image_size (cfg must be resolved).
    Pass the `read_data` result as `source` to skip reading it again."""
    src = source or read_data(cfg)
    if src.train is not None and not isinstance(src, StreamSource):
        src.train, src.test = _resize(src.train, cfg.image_size), _resize(src.test, cfg.image_size)
    return src
