"""The streaming data sets' index: where each image's encoded bytes lie and its label, found by
listing files and reading TFRecord headers, never by decoding every image (`Files`, `Stream`);
and the cheap checks run on it before any framework starts (an image's signature and end
marker, a bounded sample opened with Pillow)."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from bench.errors import BenchInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # what Keras' image_dataset_from_directory reads, less bmp/gif
JPEG_HEAD, JPEG_TAIL = b"\xff\xd8", b"\xff\xd9"
TAIL_WINDOW = 16
PNG_HEAD, PNG_TAIL = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
# the images per class whose whole file is opened with Pillow before training: enough to catch a set
# that is not images at all, few enough that ImageNet's 1,000 classes are checked in seconds
SAMPLE_PER_CLASS = 1
SAMPLE_MAX = 1000


@dataclass
class Files:
    """One split: image k's bytes are files[shard_of[k]][offset[k]:offset[k] + length[k]] (length -1:
    the whole file), its label labels[k] (-1: inside the TFRecord, read with the image)."""
    files: tuple[str, ...]
    shard_of: np.ndarray   # int32, per image
    offset: np.ndarray     # int64, per image
    length: np.ndarray     # int64, per image
    labels: np.ndarray     # int32, per image

    def __len__(self) -> int:
        return len(self.shard_of)


@dataclass
class Stream:
    """A streaming data set's train and evaluation splits and what they were read from."""
    kind: str              # "imagefolder" | "tfrecord": which record reader applies
    train: Files
    test: Files
    classes: tuple[str, ...] = ()  # imagefolder: the class folders, in label order
    seen_labels: np.ndarray | None = None  # the labels the checks saw (before --label-offset)


def looks_whole(data: bytes) -> bool:
    """A JPEG or PNG that starts and ends as one should: not some other file, not cut short.
    The pipelines of both backends apply this same rule to every image they read."""
    if data[:2] == JPEG_HEAD:  # its end marker, after any zero padding among its last TAIL_WINDOW bytes
        tail = data[-TAIL_WINDOW:].rstrip(b"\x00")
        return len(tail) >= 2 and tail[-2:] == JPEG_TAIL
    return data[:8] == PNG_HEAD and data[-8:] == PNG_TAIL


def check_image(data: bytes, where: str) -> None:
    """One sampled image, fully: its signature and end, then Pillow's decode."""
    if not looks_whole(data):
        raise BenchInputError(f"not a whole JPEG or PNG image (wrong signature or truncated): {where}")
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a corrupt file
        raise BenchInputError(f"corrupt image {where}: {e}") from None


def files_index(paths: list[str], labels: list[int]) -> Files:
    n = len(paths)
    return Files(tuple(paths), np.arange(n, dtype=np.int32), np.zeros(n, np.int64), np.full(n, -1, np.int64),
                 np.asarray(labels, np.int32))
