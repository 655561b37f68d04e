"""A folder of class sub-folders of JPEG/PNG files, as Keras' image_dataset_from_directory and
torchvision's ImageFolder read it: the class index is the folder's place in sorted order. With
`train/` and `val/` (or `validation/`) folders, those are the splits; without, every tenth file
of each class in sorted order (the 10th, 20th, ...) is held out for evaluation."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.data.sets import DataSet
from bench.data.sets.files import IMAGE_EXTENSIONS, SAMPLE_MAX, SAMPLE_PER_CLASS, Stream, check_image, files_index
from bench.errors import BenchInputError

EVAL_FOLDERS = ("val", "validation")
HOLD_OUT_EVERY = 10


def _roots(data_dir: Path) -> tuple[Path, Path | None]:
    """The training root and the evaluation root (None: split by HOLD_OUT_EVERY)."""
    train = data_dir / "train"
    evals = [data_dir / name for name in EVAL_FOLDERS if (data_dir / name).is_dir()]
    if train.is_dir() and evals:
        return train, evals[0]
    return data_dir, None


def _class_dirs(root: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise BenchInputError(f"cannot read the image folder {root}: {e.strerror}") from None
    if not entries:
        raise BenchInputError(f"the image folder is empty: data_dir={root}")
    dirs = [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not dirs:
        raise BenchInputError(f"no class sub-folders in {root} (expected one folder of images per class)")
    return dirs


def _images(folder: Path) -> list[str]:
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError as e:
        raise BenchInputError(f"cannot read the class folder {folder}: {e.strerror}") from None
    images = [str(folder / n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        raise BenchInputError(f"class folder {folder} holds no {'/'.join(IMAGE_EXTENSIONS)} images")
    return images


def count_classes(data_dir: str | None, label_offset: int = 0) -> int:
    """--num-classes' default: the class folders of the training root."""
    train, _ = _roots(Path(data_dir or "."))
    return len(_class_dirs(train))


def read_imagefolder(data_dir: str | None) -> Stream:
    if data_dir is None:
        raise BenchInputError("--data imagefolder needs --data-dir DIR (a folder of class sub-folders of images)")
    train_root, eval_root = _roots(Path(data_dir))
    classes = [d.name for d in _class_dirs(train_root)]
    splits: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    sampled = 0
    for label, name in enumerate(classes):
        images = _images(train_root / name)
        for path in images[:SAMPLE_PER_CLASS] if sampled < SAMPLE_MAX else []:
            _check_file(path)
            sampled += 1
        if eval_root is None:
            held = [p for k, p in enumerate(images) if k % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1]
            train = [p for k, p in enumerate(images) if k % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1]
        else:
            train, held = images, _images(eval_root / name) if (eval_root / name).is_dir() else []
        splits["train"][0].extend(train)
        splits["train"][1].extend([label] * len(train))
        splits["test"][0].extend(held)
        splits["test"][1].extend([label] * len(held))
    if eval_root is not None:
        extra = sorted({d.name for d in _class_dirs(eval_root)} - set(classes))
        if extra:
            raise BenchInputError(f"evaluation folder {eval_root} has classes the training folder lacks: "
                                  f"{', '.join(extra[:5])}")
    return Stream("imagefolder", files_index(*splits["train"]), files_index(*splits["test"]), tuple(classes),
                  seen_labels=np.arange(len(classes)))


def _check_file(path: str) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BenchInputError(f"cannot read image {path}: {e.strerror}") from None
    check_image(data, path)


DATA_SET = DataSet("imagefolder", classes=0, about="JPEG/PNG files in class sub-folders of --data-dir, streamed",
                   stream=read_imagefolder, count_classes=count_classes, classes_about='the class folders',
                   dir_help="a folder of class sub-folders (or train/ and val/ holding them)", order=3)
