"""The host pipeline's per-image work, for its worker processes: read an image's bytes (a file,
or a TFRecord's Example through bench.data.sets.records), apply the shared check and crop
decision (bench.data.preprocess) and decode, crop, resize and flip with Pillow. Imports neither
TensorFlow nor JAX: a worker starts in a fraction of a second and holds no framework."""
from __future__ import annotations

import io
from typing import Any

import numpy as np

from bench.data.preprocess import decision, eval_box
from bench.data.sets.files import looks_whole
from bench.data.sets.records import parse_example, read_record

# (epoch, image index, path, offset, length, label): one image to read; length -1: the whole file
Item = tuple[int, int, str, int, int, int]
_SPEC: dict[str, Any] = {}


def init_worker(spec: dict[str, Any]) -> None:
    """A worker's fixed settings: size, seed, train or eval, label offset (set once per process)."""
    _SPEC.clear()
    _SPEC.update(spec)


def read_bytes(path: str, offset: int, length: int, label: int, label_offset: int) -> tuple[bytes, int]:
    """An image's encoded bytes and its label (from the TFRecord's Example where it holds it)."""
    if length < 0:
        with open(path, "rb") as f:
            return f.read(), label
    example = parse_example(read_record(path, offset, length))
    return example["image/encoded"][0], int(example["image/class/label"][0]) - label_offset


def decode_item(item: Item, spec: dict[str, Any] | None = None) -> tuple[np.ndarray | None, int, str]:
    """(uint8 size x size x 3 image, label, '') or (None, -1, why) for a bad image."""
    from PIL import Image

    s = spec or _SPEC
    epoch, index, path, offset, length, label = item
    where = path if length < 0 else f"{path} record at byte {offset - 12}"
    try:
        data, label = read_bytes(path, offset, length, label, s["label_offset"])
        if not looks_whole(data):
            return None, -1, f"{where}: not a whole JPEG or PNG"
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            h, w = im.height, im.width
            top, left, ch, cw, flip = (decision(s["seed"], epoch, index, h, w) if s["train"] else eval_box(h, w))
            out = im.resize((s["size"], s["size"]), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            if flip:
                out = out.transpose(Image.FLIP_LEFT_RIGHT)
            return np.asarray(out, np.uint8), label, ""
    except Exception as e:  # noqa: BLE001 - a corrupt image is skipped and counted, whatever the decoder raised
        return None, -1, f"{where}: {type(e).__name__}: {e}"


def decode_chunk(items: list[Item]) -> list[tuple[np.ndarray | None, int, str]]:
    return [decode_item(item) for item in items]
