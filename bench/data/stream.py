"""The streaming sources (image folders, TFRecord shards) behind the same seam as the array sets
(`DataSource.train_dataset` per shard for TensorFlow, `host_batches` per shard for JAX): each
replica reads its own shard of the files, and every image is read, checked, decoded, cropped
(bench.data.preprocess) and resized per step. TensorFlow: tf.data (parallel interleave over
TFRecord shards, parallel map, prefetch, deterministic order). JAX: Pillow in worker processes,
never TensorFlow. A corrupt image is skipped and counted; one past --max-bad-images fails the run."""
from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from bench.data.arrays import DataSource
from bench.data.host_decode import Item, decode_chunk, decode_item, init_worker
from bench.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, TRAIN, decision, epoch_order, eval_box
from bench.data.sets.files import JPEG_HEAD, JPEG_TAIL, PNG_HEAD, PNG_TAIL, TAIL_WINDOW, Files, Stream
from bench.errors import BenchInputError

if TYPE_CHECKING:
    import tensorflow as tf

SHUFFLE_RECORDS = 1024   # tf.data's shuffle buffer over interleaved TFRecords (encoded images, ~110 KB each)
HOST_CHUNKS_AHEAD = 2    # per worker: the host pipeline's batches decoding ahead of the step
MAX_EPOCHS = 2**40       # "forever" for tf.data's epoch counter
# the memory estimate's terms for a streaming pipeline's buffers (bench.measure.memory)
ENCODED_IMAGE_BYTES = 160_000      # an ImageNet training JPEG is about 110 KB on average; room for larger ones
WORKER_PROCESS_BYTES = 100 * 2**20  # a spawned decoding worker's own resident memory: Python, numpy, Pillow
TF_BATCHES_AHEAD = 4                # what tf.data's AUTOTUNE prefetch typically holds decoded


class TooManyBadImages(RuntimeError):
    """Past --max-bad-images: the run fails with a row naming the file."""


@dataclass
class StreamSource(DataSource):
    """A streaming data set: its index (bench.data.sets.files) and how to read it."""
    stream: Stream | None = None
    label_offset: int = 0
    # data_workers (DataSource's): None is tf.data's AUTOTUNE, and on JAX the CPU count
    max_bad_images: int = 100
    bad_count: int = 0  # the pipelines count into it (TensorFlow's from its map threads)
    # JAX's decoding processes, one pool for training and one for evaluation, shared by the shards of
    # this process's replicas: --data-workers counts processes per training process, not per replica
    _pools: dict = field(default_factory=dict, repr=False, compare=False)
    _bad_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def fixed(self) -> bool:
        return False

    @property
    def train_size(self) -> int:
        return len(self.stream.train)

    @property
    def test_size(self) -> int:
        return len(self.stream.test)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        return IMAGENET_MEAN, IMAGENET_STD

    @property
    def bad_images(self) -> int:
        return self.bad_count

    def preprocess_name(self) -> str:
        return TRAIN

    def resolved_workers(self, backend: str) -> int | None:
        """--data-workers as run: on JAX auto is the CPU count; on TensorFlow AUTOTUNE (None)."""
        if self.data_workers is None and backend == "jax":
            return os.cpu_count() or 1
        return self.data_workers

    def shard(self, files: Files, num_shards: int, shard_index: int) -> np.ndarray:
        """The images a shard reads: those of every num_shards-th file (so each replica opens only
        its own files); by image where there are fewer files than shards."""
        n_files = len(files.files)
        if n_files >= num_shards:
            index = np.flatnonzero(files.shard_of % num_shards == shard_index)
        else:
            index = np.arange(shard_index, len(files), num_shards)
        return index.astype(np.int64)

    def _shard_or_refuse(self, num_shards: int, shard_index: int, per_replica_batch: int) -> np.ndarray:
        index = self.shard(self.stream.train, num_shards, shard_index)
        if len(index) < per_replica_batch:
            raise BenchInputError(f"a {self.name} training shard holds {len(index)} images, fewer than one "
                                  f"batch. Received: batch_size={per_replica_batch}")
        return index

    def _count_bad(self, why: str) -> None:
        with self._bad_lock:  # tf.data's map threads call it concurrently
            self.bad_count += 1
            count = self.bad_count
        if count > self.max_bad_images:
            raise TooManyBadImages(f"{count} corrupt images, more than max_bad_images="
                                   f"{self.max_bad_images}; the last: {why}")

    # ---- TensorFlow: tf.data ---------------------------------------------------------------------
    def train_dataset(self, num_shards: int, shard_index: int, per_replica_batch: int) -> "tf.data.Dataset":
        import tensorflow as tf

        files = self.stream.train
        index = self._shard_or_refuse(num_shards, shard_index, per_replica_batch)
        seed = self.seed

        def epoch_images(epoch: tf.Tensor) -> tf.data.Dataset:
            if self.stream.kind == "tfrecord":
                return self._tf_records(files, index, epoch, num_shards, shard_index)
            order = tf.numpy_function(lambda e: epoch_order(seed, int(e), shard_index, index), [epoch], tf.int64)
            ids = tf.data.Dataset.from_tensor_slices(tf.reshape(order, [-1]))
            return ids.map(lambda i: (epoch, i))
        ds = tf.data.Dataset.range(MAX_EPOCHS).flat_map(epoch_images)
        if self.stream.kind != "tfrecord":
            ds = ds.map(self._tf_read_file(files), num_parallel_calls=self._tf_parallel())
        ds = self._tf_decoded(ds, train=True)
        return self._tf_finish(ds.batch(per_replica_batch, drop_remainder=True))

    def test_dataset(self, test_batch: int) -> "tf.data.Dataset":
        """The whole evaluation split, in order (each process evaluates all of it)."""
        import tensorflow as tf

        files = self.stream.test
        index = np.arange(len(files), dtype=np.int64)
        if self.stream.kind == "tfrecord":
            ds = self._tf_records(files, index, tf.constant(0, tf.int64), 1, 0, shuffle=False)
        else:
            ds = tf.data.Dataset.from_tensor_slices(index).map(lambda i: (tf.constant(0, tf.int64), i))
            ds = ds.map(self._tf_read_file(files), num_parallel_calls=self._tf_parallel())
        return self._tf_finish(self._tf_decoded(ds, train=False).batch(test_batch))

    def _tf_parallel(self) -> int:
        import tensorflow as tf

        return tf.data.AUTOTUNE if self.data_workers is None else max(self.data_workers, 1)

    def _tf_finish(self, ds: "tf.data.Dataset") -> "tf.data.Dataset":
        import tensorflow as tf

        options = tf.data.Options()
        options.deterministic = True  # every run is seeded: the same images in the same batches
        if self.data_workers:
            options.threading.private_threadpool_size = self.data_workers
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    def _tf_read_file(self, files: Files) -> Callable:
        import tensorflow as tf

        paths, labels = tf.constant(files.files), tf.constant(files.labels)

        def read(epoch, i):
            path = tf.gather(paths, i)
            return epoch, i, tf.io.read_file(path), tf.gather(labels, i), path
        return read

    def _tf_records(self, files: Files, index: np.ndarray, epoch, num_shards: int, shard_index: int,
                    shuffle: bool = True) -> "tf.data.Dataset":
        """One epoch of a shard's TFRecords: its files in a seeded order, read by a parallel
        interleave, each record numbered by its global image index, through a shuffle buffer."""
        import tensorflow as tf

        shard_files = np.unique(files.shard_of[index]).astype(np.int64)
        by_image = len(files.files) < num_shards
        base = tf.constant(np.searchsorted(files.shard_of, np.arange(len(files.files))).astype(np.int64))
        paths = tf.constant(files.files)
        seed, offset = self.seed, self.label_offset
        if shuffle:
            order = tf.numpy_function(lambda e: epoch_order(seed, int(e), shard_index, shard_files), [epoch], tf.int64)
            file_ids = tf.data.Dataset.from_tensor_slices(tf.reshape(order, [-1]))
        else:
            file_ids = tf.data.Dataset.from_tensor_slices(shard_files)

        def records(k):
            path = tf.gather(paths, k)
            return tf.data.TFRecordDataset(path).enumerate().map(
                lambda r, rec: (epoch, tf.gather(base, k) + r, rec, path))
        par = self._tf_parallel()
        ds = file_ids.interleave(records, cycle_length=None if self.data_workers is None else max(self.data_workers, 1),
                                 num_parallel_calls=par, deterministic=True)
        if by_image:
            ds = ds.filter(lambda e, i, rec, path: i % num_shards == shard_index)
        if shuffle:
            ds = ds.shuffle(SHUFFLE_RECORDS, seed=seed * 1000 + shard_index, reshuffle_each_iteration=True)

        def parse(e, i, rec, path):
            ex = tf.io.parse_single_example(rec, {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                                                  "image/class/label": tf.io.FixedLenFeature([], tf.int64)})
            label = tf.cast(ex["image/class/label"] - offset, tf.int32)
            where = tf.strings.join([path, " record ", tf.strings.as_string(i - tf.gather(base, 0))])
            return e, i, ex["image/encoded"], label, where
        return ds.map(parse, num_parallel_calls=par)

    def _tf_decoded(self, ds: "tf.data.Dataset", *, train: bool) -> "tf.data.Dataset":
        """(epoch, index, bytes, label, where) -> (uint8 image, label): the shared check (bad
        images counted and dropped), decode, the shared crop decision, resize, flip."""
        import tensorflow as tf

        size, seed = self.image_size, self.seed

        def box(e, i, h, w):
            return decision(seed, int(e), int(i), int(h), int(w)) if train else eval_box(int(h), int(w))

        def count(where):
            self._count_bad(where.decode(errors="replace") + ": not a whole JPEG or PNG")
            return np.int64(0)

        def check(e, i, data, label, where):
            ok = _tf_looks_whole(data)
            counted = tf.cond(ok, lambda: tf.constant(0, tf.int64),
                              lambda: tf.reshape(tf.numpy_function(count, [where], tf.int64), []))
            return ok, counted

        def keep(e, i, data, label, where):
            ok, counted = check(e, i, data, label, where)
            with tf.control_dependencies([counted]):
                return tf.identity(ok)

        def decode(e, i, data, label, where):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            shape = tf.shape(image)
            b = tf.reshape(tf.numpy_function(box, [e, i, shape[0], shape[1]], tf.int64), [5])
            crop = image[b[0]:b[0] + b[2], b[1]:b[1] + b[3]]
            out = tf.image.resize(crop, [size, size], method="bilinear", antialias=True)
            out = tf.cond(b[4] > 0, lambda: tf.reverse(out, [1]), lambda: out)
            out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
            return tf.ensure_shape(out, [size, size, 3]), label
        return ds.filter(keep).map(decode, num_parallel_calls=self._tf_parallel())

    # ---- JAX: host batches from worker processes ------------------------------------------------
    def host_batches(self, num_shards: int, shard_index: int, per_replica_batch: int
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        files = self.stream.train
        index = self._shard_or_refuse(num_shards, shard_index, per_replica_batch)

        def items() -> Iterator[Item]:
            for epoch in itertools.count():
                for i in epoch_order(self.seed, epoch, shard_index, index):
                    yield _item(files, epoch, int(i))
        return self._host(items(), per_replica_batch, train=True, drop_remainder=True)

    def host_test_batches(self, test_batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        files = self.stream.test
        return self._host((_item(files, 0, i) for i in range(len(files))), test_batch, train=False,
                          drop_remainder=False)

    def _spec(self, train: bool) -> dict:
        return {"size": self.image_size, "seed": self.seed, "train": train, "label_offset": self.label_offset}

    def _host(self, items: Iterator[Item], batch: int, *, train: bool, drop_remainder: bool
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of `batch` items decoded by the workers (or inline with --data-workers 0), a
        bounded number ahead, in order; bad images dropped and counted; full batches out."""
        workers = self.resolved_workers("jax")
        pool = self._pool(workers, train)
        pending: deque = deque()
        images: list[np.ndarray] = []
        labels: list[int] = []
        chunks = iter(lambda: list(itertools.islice(items, batch)), [])
        while True:
            while pool is not None and len(pending) < HOST_CHUNKS_AHEAD * workers:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                pending.append(pool.apply_async(decode_chunk, (chunk,)))
            if pool is None:
                chunk = next(chunks, None)
                results = None if chunk is None else [decode_item(it, self._spec(train)) for it in chunk]
            else:
                results = pending.popleft().get() if pending else None
            if results is None:
                break
            for image, label, why in results:
                if image is None:
                    self._count_bad(why)
                    continue
                images.append(image)
                labels.append(label)
            while len(images) >= batch:
                yield np.stack(images[:batch]), np.asarray(labels[:batch], np.int32)
                del images[:batch], labels[:batch]
        if images and not drop_remainder:
            yield np.stack(images), np.asarray(labels, np.int32)

    def _pool(self, workers: int, train: bool):
        """The shared worker pool for `train` (None with --data-workers 0: decode in this process)."""
        if workers == 0:
            return None
        if train not in self._pools:
            # spawned, not forked: this process runs JAX's threads, which a fork would copy mid-flight.
            # multiprocessing ends the workers at exit
            self._pools[train] = multiprocessing.get_context("spawn").Pool(
                workers, initializer=init_worker, initargs=(self._spec(train),))
        return self._pools[train]


def _item(files: Files, epoch: int, i: int) -> Item:
    return (epoch, i, files.files[files.shard_of[i]], int(files.offset[i]), int(files.length[i]), int(files.labels[i]))


def _tf_looks_whole(data: "tf.Tensor") -> "tf.Tensor":
    """bench.data.sets.files.looks_whole on a tf.string scalar: the same rule, in tf ops."""
    import tensorflow as tf

    n = tf.strings.length(data)
    window = tf.strings.substr(data, tf.maximum(n - TAIL_WINDOW, 0), TAIL_WINDOW)
    # two zero bytes in front: every gather below has an index, even for an empty file
    tail = tf.io.decode_raw(tf.strings.join([tf.constant(b"\x00\x00"), window]), tf.uint8)
    last = tf.reduce_max(tf.concat([tf.constant([0], tf.int64), tf.where(tail != 0)[:, 0]], 0))
    jpeg_tail = tf.logical_and(last >= 3, tf.logical_and(  # >= 2 bytes left after the zero padding
        tf.gather(tail, last) == JPEG_TAIL[1], tf.gather(tail, tf.maximum(last - 1, 0)) == JPEG_TAIL[0]))
    jpeg = tf.logical_and(tf.strings.substr(data, 0, 2) == JPEG_HEAD, jpeg_tail)
    png = tf.logical_and(tf.strings.substr(data, 0, 8) == PNG_HEAD,
                         tf.strings.substr(data, tf.maximum(n - 8, 0), 8) == PNG_TAIL)
    return tf.logical_or(jpeg, png)


def pipeline_bytes(backend: str, per_replica_batch: int, image_size: int, workers: int | None, kind: str) -> int:
    """A streaming pipeline's host buffers in one process: decoded batches waiting, the encoded
    records in tf.data's shuffle buffer, the decoding worker processes on JAX."""
    decoded = per_replica_batch * image_size * image_size * 3
    if backend == "jax":
        n = workers if workers is not None else (os.cpu_count() or 1)
        return n * (WORKER_PROCESS_BYTES + HOST_CHUNKS_AHEAD * decoded) + decoded
    shuffled = SHUFFLE_RECORDS * ENCODED_IMAGE_BYTES if kind == "tfrecord" else 0
    return TF_BATCHES_AHEAD * decoded + shuffled


def stream_source(src: DataSource, stream: Stream, *, label_offset: int, workers: int | None,
                  max_bad_images: int) -> StreamSource:
    """The array source's settings on a streaming data set's index."""
    return StreamSource(src.name, src.num_classes, src.image_size, normalize=src.normalize, augment=src.augment,
                        seed=src.seed, stream=stream, label_offset=label_offset, data_workers=workers,
                        max_bad_images=max_bad_images)


