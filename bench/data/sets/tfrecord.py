"""ImageNet-format TFRecord shards (`train-*`, `validation-*`) of tf.train.Examples with
`image/encoded` and `image/class/label`, as tf_cnn_benchmarks and the TF models garden read them.
ImageNet's shards hold labels 1..1000 with 0 left for a background class: tf_cnn_benchmarks
trains 1001 classes on them as they are, the models garden subtracts 1 and trains 1000.
`--label-offset` is that subtraction (default 0), and --num-classes defaults to 1001 - offset."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.sets import DataSet
from bench.data.sets.files import Files, Stream, check_image
from bench.data.sets.records import parse_example, read_record, record_spans
from bench.errors import BenchInputError

IMAGENET_CLASSES = 1001  # 1000 labels from 1, and 0 for the background class
PATTERNS = {"train": "train-*", "test": "validation-*"}


def count_classes(data_dir: str | None, label_offset: int = 0) -> int:
    return IMAGENET_CLASSES - label_offset


def _index(data_dir: Path, pattern: str, seen: list[int], *, required: bool = True) -> Files:
    try:
        shards = sorted(str(p) for p in data_dir.glob(pattern) if p.is_file())
    except OSError as e:
        raise BenchInputError(f"cannot list {data_dir}: {e.strerror}") from None
    if not shards and required:
        raise BenchInputError(f"no TFRecord shards {pattern} in data_dir={data_dir}")
    shard_of, offset, length = [], [], []
    for k, shard in enumerate(shards):
        try:
            with open(shard, "rb") as f:
                spans = list(record_spans(f, shard, check_data=1))
        except OSError as e:
            raise BenchInputError(f"cannot read TFRecord shard {shard}: {e.strerror}") from None
        if not spans:
            raise BenchInputError(f"TFRecord shard {shard} holds no records")
        seen.append(_check_first(shard, *spans[0]))
        shard_of += [k] * len(spans)
        offset += [s[0] for s in spans]
        length += [s[1] for s in spans]
    return Files(tuple(shards), np.asarray(shard_of, np.int32), np.asarray(offset, np.int64),
                 np.asarray(length, np.int64), np.full(len(shard_of), -1, np.int32))


def _check_first(shard: str, offset: int, length: int) -> int:
    """The first record whole: an Example with an image that opens, and its label."""
    try:
        example = parse_example(read_record(shard, offset, length))
    except (ValueError, IndexError, UnicodeDecodeError):
        raise BenchInputError(f"TFRecord shard {shard}: its first record is not a tf.train.Example") from None
    for key in ("image/encoded", "image/class/label"):
        if not example.get(key):
            raise BenchInputError(f"TFRecord shard {shard}: its first record has no {key!r} feature")
    check_image(example["image/encoded"][0], f"{shard} (record 0)")
    return int(example["image/class/label"][0])


def read_tfrecord(data_dir: str | None) -> Stream:
    if data_dir is None:
        raise BenchInputError("--data tfrecord needs --data-dir DIR (a folder of train-* and validation-* shards)")
    root, seen = Path(data_dir), []
    train = _index(root, PATTERNS["train"], seen)
    # no validation shards: a throughput run needs none (accuracy mode refuses the set)
    test = _index(root, PATTERNS["test"], seen, required=False)
    return Stream("tfrecord", train, test, seen_labels=np.asarray(seen, np.int64))


DATA_SET = DataSet("tfrecord", classes=IMAGENET_CLASSES,
                   about="ImageNet-format TFRecord shards in --data-dir, streamed",
                   stream=read_tfrecord, count_classes=count_classes, classes_about='1001 - --label-offset',
                   dir_help="a folder of train-* and validation-* TFRecord shards", order=4)
