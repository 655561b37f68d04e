"""A run's input: `read_data` reads and checks the chosen data set with numpy before any framework starts, `load_data` finishes it into a `DataSource` whose pipelines each backend consumes (tf.data per shard for TensorFlow, host numpy batches for JAX). Every source yields uint8 NHWC images and int labels, so bad data is a one-line BenchInputError, not a crash deep inside a framework."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from bench.errors import BenchInputError

if TYPE_CHECKING:
    import tensorflow as tf

    from bench.config.schema import RunConfig
from bench.data.sets import DATA_SETS
from bench.data.sets.split import Split

log = logging.getLogger(__name__)




@dataclass
class DataSource:
    """A data set ready to be turned into per-shard tf.data pipelines."""
    name: str
    num_classes: int
    image_size: int
    train: Split | None = None        # None for synthetic
    test: Split | None = None
    normalize: bool = False
    augment: bool = False
    seed: int = 0
    data_workers: int | None = None   # --data-workers: None for the pipeline's own choice (tf.data's AUTOTUNE)

    @property
    def fixed(self) -> bool:
        """Synthetic data: one batch made once and reused every step."""
        return self.train is None

    @property
    def train_size(self) -> int:
        return 0 if self.train is None else len(self.train.labels)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.train.images.reshape(-1, 3).astype(np.float64) / 255.0
        return x.mean(axis=0).astype(np.float32), np.maximum(x.std(axis=0), 1e-3).astype(np.float32)

    def train_dataset(self, num_shards: int, shard_index: int, per_replica_batch: int) -> "tf.data.Dataset":
        """Infinite, shuffled, batched (drop_remainder) training pipeline for one shard."""
        import tensorflow as tf

        if self.fixed:
            return _synthetic_batch(per_replica_batch, self.image_size, self.num_classes,
                                    self.seed * 1000 + shard_index)
        ds = tf.data.Dataset.from_tensor_slices((self.train.images, self.train.labels))
        ds = ds.shard(num_shards, shard_index).cache()
        shard_len = len(range(shard_index, self.train_size, num_shards))
        ds = ds.shuffle(shard_len, seed=self.seed + shard_index, reshuffle_each_iteration=True).repeat()
        if self.augment:
            # Augmentation is per image; the rest of the preprocessing runs per batch (cheaper).
            ds = ds.map(_augment_fn(self.seed + shard_index), num_parallel_calls=self._parallel_calls())
        ds = ds.batch(per_replica_batch, drop_remainder=True)
        ds = ds.map(self._preprocess_fn(), num_parallel_calls=self._parallel_calls())
        return ds.prefetch(tf.data.AUTOTUNE)

    def _parallel_calls(self) -> int | None:
        """tf.data's map parallelism for --data-workers: AUTOTUNE unless set; 0 maps in the
        iterator's own thread (None: tf.data's sequential map)."""
        import tensorflow as tf

        return tf.data.AUTOTUNE if self.data_workers is None else (self.data_workers or None)

    def test_dataset(self, test_batch: int) -> "tf.data.Dataset":
        """The whole test split, in order, for evaluation, `test_batch` images at a time (each
        process evaluates all of it)."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((self.test.images, self.test.labels)).cache()
        ds = ds.batch(test_batch).map(self._preprocess_fn(), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _preprocess_fn(self) -> Callable:
        """uint8 -> float32 /255 (the course's scaling), optional per-channel normalisation."""
        import tensorflow as tf

        mean, std = self.mean_std() if self.normalize else (None, None)

        def preprocess(images, labels):
            x = tf.cast(images, tf.float32) / 255.0
            if mean is not None:
                x = (x - mean) / std
            return x, labels
        return preprocess


    # ---- the host pipeline (numpy; the JAX backend feeds devices from it) ------------------------
    def host_batches(self, num_shards: int, shard_index: int, per_replica_batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Infinite, shuffled (a new order every epoch, from the seed), batched (drop_remainder)
        training batches of one shard, augmented if asked: uint8 NHWC images (a quarter of the
        bytes of float32 to move to the device; `device_preprocess` finishes them inside the
        step) and int32 labels. Synthetic data: its fixed float32 batch."""
        if self.fixed:
            batch = synthetic_arrays(per_replica_batch, self.image_size, self.num_classes, self.seed * 1000 + shard_index)
            while True:
                yield batch
        index = np.arange(shard_index, self.train_size, num_shards)
        if len(index) < per_replica_batch:
            raise BenchInputError(f"a {self.name} training shard holds {len(index)} images, fewer than one "
                                  f"batch. Received: batch_size={per_replica_batch}")
        rng = np.random.default_rng(self.seed + shard_index)
        while True:
            order = rng.permutation(index)
            for start in range(0, len(order) - per_replica_batch + 1, per_replica_batch):
                chosen = order[start:start + per_replica_batch]
                images = self.train.images[chosen]
                if self.augment:
                    images = _augment_np(images, rng)
                yield images, self.train.labels[chosen]

    def host_test_batches(self, test_batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The whole test split, in order, as uint8 images (see `host_batches`), for evaluation."""
        for start in range(0, len(self.test.labels), test_batch):
            yield self.test.images[start:start + test_batch], self.test.labels[start:start + test_batch]

    def device_preprocess(self) -> Callable:
        """What `_preprocess_fn` does on TensorFlow, as array code for inside a jitted step:
        uint8 -> float32 /255, optional per-channel normalisation. Identity for synthetic data,
        which is float32 already."""
        if self.fixed:
            return lambda images: images
        mean, std = self.mean_std() if self.normalize else (None, None)

        def preprocess(images):
            x = images.astype(np.float32) / np.float32(255.0)
            return (x - mean) / std if mean is not None else x
        return preprocess


def _augment_fn(seed: int) -> Callable:
    """Standard CIFAR augmentation: 4-pixel zero pad, random crop back, random horizontal flip."""
    import tensorflow as tf

    def augment(image, label):
        h, w = image.shape[0], image.shape[1]
        image = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
        image = tf.image.random_crop(image, [h, w, 3])
        image = tf.image.random_flip_left_right(image)
        return image, label
    return augment


def _augment_np(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Standard CIFAR augmentation on a batch: 4-pixel zero pad, random crop back, random flip."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    oy, ox = rng.integers(0, 9, size=n), rng.integers(0, 9, size=n)
    rows = (oy[:, None] + np.arange(h))[:, :, None]
    cols = (ox[:, None] + np.arange(w))[:, None, :]
    out = padded[np.arange(n)[:, None, None], rows, cols]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def synthetic_arrays(n: int, image_size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One fixed random batch of `n` images: float32 N(0, 1) images and uniform int32 labels, from `seed`.
    Both backends use it, so they see identical data for a seed."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, image_size, image_size, 3), dtype=np.float32)
    labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    return images, labels


def _synthetic_batch(n: int, image_size: int, num_classes: int, seed: int) -> "tf.data.Dataset":
    """One fixed batch (made once; the harness keeps it on the device and reuses it)."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensors(synthetic_arrays(n, image_size, num_classes, seed)).repeat()


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
    train, test = data_set.read(cfg.data_dir)
    _check_labels(train, cfg.num_classes, f"{cfg.data} train")
    _check_labels(test, cfg.num_classes, f"{cfg.data} test")
    src.train, src.test = train, test
    return src


def load_data(cfg: "RunConfig", source: DataSource | None = None) -> DataSource:
    """The configured data set, validated and resized to cfg.image_size (cfg must be resolved).
    Pass the `read_data` result as `source` to skip reading it again."""
    src = source or read_data(cfg)
    if src.train is not None:
        src.train, src.test = _resize(src.train, cfg.image_size), _resize(src.test, cfg.image_size)
    return src
