"""CIFAR-100 in its official python format: found in a folder or its .tar.gz, decoded and checked; and the writer of that format (for tests and the lab's fixtures)."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from bench.data.sets import DataSet
from bench.data.sets.split import Split
from bench.errors import BenchInputError

CIFAR_DIR = "cifar-100-python"
CIFAR_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR_SIDE = 32


# ---- CIFAR-100 ------------------------------------------------------------------------------
def _read_pickle(blob: bytes, where: str) -> dict:
    try:
        obj = pickle.loads(blob, encoding="bytes")
    except Exception as e:  # truncated or not a pickle
        raise BenchInputError(f"corrupt CIFAR-100 split {where}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or b"data" not in obj or b"fine_labels" not in obj:
        raise BenchInputError(f"{where} is not a cifar-100-python split (no b'data'/b'fine_labels')")
    return obj


def _decode_cifar(obj: dict, where: str) -> Split:
    """N x 3072 channel-major rows (R plane, G plane, B plane) -> N x 32 x 32 x 3."""
    data = np.asarray(obj[b"data"])
    labels = np.asarray(obj[b"fine_labels"])
    if data.ndim != 2 or data.shape[1] != 3 * CIFAR_SIDE * CIFAR_SIDE:
        raise BenchInputError(f"{where}: data has shape {data.shape}, expected (N, 3072)")
    if data.dtype != np.uint8:
        raise BenchInputError(f"{where}: data has dtype {data.dtype}, expected uint8")
    if labels.ndim != 1 or len(labels) != len(data):
        raise BenchInputError(f"{where}: {len(labels)} labels for {len(data)} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise BenchInputError(f"{where}: labels must be integers. Received: labels of dtype {labels.dtype}, "
                              f"first {labels[:1].tolist()}")
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), labels.astype(np.int32))


def _cifar_from_archive(path: Path) -> tuple[Split, Split]:
    splits = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base in ("train", "test") and member.isfile():
                    splits[base] = _decode_cifar(_read_pickle(tar.extractfile(member).read(),
                                                              f"{path}:{member.name}"), f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise BenchInputError(f"corrupt or truncated CIFAR-100 archive {path}: {e}") from None
    missing = {"train", "test"} - splits.keys()
    if missing:
        raise BenchInputError(f"CIFAR-100 archive {path} has no {'/'.join(sorted(missing))} split")
    return splits["train"], splits["test"]


def cifar100_split_pickle(rows: np.ndarray, labels) -> bytes:
    """One split in the official format: N x 3072 channel-major uint8 rows and fine labels."""
    n = len(rows)
    return pickle.dumps({b"data": rows, b"fine_labels": list(map(int, labels)),
                         b"coarse_labels": [0] * n, b"filenames": [b"x"] * n}, protocol=2)


def cifar100_archive(splits: dict[str, bytes]) -> bytes:
    """A cifar-100-python.tar.gz holding the given split pickles (for tests and benchmarks)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split, blob in splits.items():
            info = tarfile.TarInfo(f"{CIFAR_DIR}/{split}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def _cifar_from_folder(folder: Path) -> tuple[Split, Split]:
    out = []
    for split in ("train", "test"):
        f = folder / split
        if not f.is_file():
            raise BenchInputError(f"CIFAR-100 folder {folder} has no '{split}' file")
        out.append(_decode_cifar(_read_pickle(f.read_bytes(), str(f)), str(f)))
    return out[0], out[1]


def find_cifar100(data_dir: str | None) -> Path | None:
    """The archive or extracted folder to read, searching data_dir, then Keras' cache."""
    roots = [Path(data_dir)] if data_dir else [Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"]
    for root in roots:
        if root.is_file():
            return root
        for cand in (root, root / CIFAR_DIR):
            if (cand / "train").is_file() or (cand / "test").is_file():
                return cand
        if (root / CIFAR_ARCHIVE).is_file():
            return root / CIFAR_ARCHIVE
    if data_dir:
        raise BenchInputError(f"no CIFAR-100 data in data_dir={data_dir} (expected {CIFAR_ARCHIVE}, "
                              f"or a folder with 'train' and 'test')")
    return None


def load_cifar100(data_dir: str | None) -> tuple[Split, Split]:
    """Train and test splits from a local copy; with none, Keras' downloader (needs network)."""
    try:
        return _load_cifar100(data_dir)
    except OSError as e:  # unreadable files or folders: the user's input, not a crash
        raise BenchInputError(f"cannot read CIFAR-100 data in data_dir={data_dir}: "
                              f"{e.strerror or e}: {e.filename or ''}") from None


def _load_cifar100(data_dir: str | None) -> tuple[Split, Split]:
    path = find_cifar100(data_dir)
    if path is None:
        try:
            import keras
            (xtr, ytr), (xte, yte) = keras.datasets.cifar100.load_data(label_mode="fine")
        except Exception as e:
            raise BenchInputError(f"CIFAR-100 not found locally (pass --data-dir) and the download "
                                  f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        return Split(xtr, ytr.reshape(-1).astype(np.int32)), Split(xte, yte.reshape(-1).astype(np.int32))
    return _cifar_from_archive(path) if path.is_file() else _cifar_from_folder(path)


DATA_SET = DataSet("cifar100", classes=100, about="CIFAR-100 from --data-dir or Keras' cache", read=load_cifar100,
                   dir_help="a cifar-100-python .tar.gz, its extracted folder, or a folder holding either "
                   "(default: Keras' cache, then download)",
                   resident_bytes=60000 * CIFAR_SIDE * CIFAR_SIDE * 3, order=1)
