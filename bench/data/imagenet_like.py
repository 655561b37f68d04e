"""`python -m bench.data.imagenet_like OUT --classes 10 --per-class 20`: a synthetic ImageNet-like
set for trying the streaming sources offline. Images about 500x375 (sizes vary as ImageNet's
do), real JPEG encoding, image-like content (smooth colour fields, shapes and grain, so a JPEG
is about as large as an ImageNet one, not white noise), written twice: as a folder tree
(OUT/folders/train/CLASS/*.JPEG, OUT/folders/val/CLASS/*.JPEG) for --data imagefolder, and as
ImageNet-format TFRecord shards (OUT/tfrecord/train-00000-of-0000N, validation-...) with 1-based
labels as ImageNet's (--data tfrecord --label-offset 1). Writes only into OUT, which must not
exist or be empty; the TFRecords are framed by bench.data.sets.records, not by TensorFlow."""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from bench.config.parse import OneLineParser
from bench.data.sets.records import encode_example, frame
from bench.errors import BenchInputError, input_error, interrupted

SIZES = ((500, 375), (375, 500), (500, 333), (500, 400), (640, 480), (400, 300))  # width, height
JPEG_QUALITY = 90
MAX_IMAGES = 1_000_000


def image_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random colour field with a few shapes on it and some grain (uint8 HxWx3)."""
    from PIL import Image, ImageDraw

    field = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    im = Image.fromarray(field).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 9)):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    x = np.asarray(im, np.int16) + rng.normal(0, 16, (height, width, 3)).astype(np.int16)  # sensor-like grain
    return np.clip(x, 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def write(out: Path, classes: int, per_class: int, val_per_class: int, shards: int, seed: int) -> dict[str, int]:
    """Both layouts of one set; the number of images per split."""
    rng = np.random.default_rng(seed)
    names = [f"n{k:08d}" for k in range(classes)]  # WordNet-id-like, sorted as their labels
    records: dict[str, list[bytes]] = {"train": [], "validation": []}
    for split, folder, n in (("train", "train", per_class), ("validation", "val", val_per_class)):
        for label, name in enumerate(names):
            (out / "folders" / folder / name).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                w, h = SIZES[int(rng.integers(len(SIZES)))]
                data = jpeg(image_like(rng, w, h))
                (out / "folders" / folder / name / f"{name}_{k}.JPEG").write_bytes(data)
                records[split].append(encode_example({
                    "image/encoded": data, "image/format": b"JPEG", "image/class/label": label + 1,
                    "image/class/synset": name.encode(), "image/height": h, "image/width": w,
                    "image/filename": f"{name}_{k}.JPEG".encode()}))
    (out / "tfrecord").mkdir(parents=True, exist_ok=True)
    for split, recs in records.items():
        order = rng.permutation(len(recs))  # ImageNet's shards are shuffled across classes
        n = max(1, min(shards, len(recs)))
        for s in range(n):
            with open(out / "tfrecord" / f"{split}-{s:05d}-of-{n:05d}", "wb") as f:
                for i in order[s::n]:
                    f.write(frame(recs[i]))
    return {"train": classes * per_class, "validation": classes * val_per_class}


def parse(argv: list[str]) -> argparse.Namespace:
    p = OneLineParser(prog="python -m bench.data.imagenet_like", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=20, help="training images per class")
    p.add_argument("--val-per-class", type=int, default=None, help="evaluation images per class (default: a fifth)")
    p.add_argument("--shards", type=int, default=4, help="TFRecord shards per split")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.val_per_class is None:
        args.val_per_class = max(1, args.per_class // 5)
    for name in ("classes", "per_class", "shards"):
        if getattr(args, name) < 1:
            raise BenchInputError(f"--{name.replace('_', '-')} must be at least 1. Received: {getattr(args, name)}")
    if args.val_per_class < 0 or args.seed < 0:
        raise BenchInputError(f"--val-per-class and --seed must be >= 0. Received: {args.val_per_class}, {args.seed}")
    if args.classes * (args.per_class + args.val_per_class) > MAX_IMAGES:
        raise BenchInputError(f"more than {MAX_IMAGES:,} images asked for: classes={args.classes}, "
                              f"per_class={args.per_class}, val_per_class={args.val_per_class}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchInputError(f"the output folder exists and is not empty: out={args.out}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            args = parse(list(sys.argv[1:] if argv is None else argv))
        except BenchInputError as e:
            return input_error(e)
        counts = write(Path(args.out), args.classes, args.per_class, args.val_per_class, args.shards, args.seed)
    except KeyboardInterrupt:
        return interrupted()
    print(f"wrote {counts['train']} training and {counts['validation']} evaluation images of {args.classes} "
          f"classes to {args.out}/folders (--data imagefolder) and {args.out}/tfrecord (--data tfrecord "
          f"--label-offset 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
