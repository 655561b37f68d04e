"""Portable weights: a Keras .weights.h5 file, read by either backend, checked against the model
layer by layer so that a mismatch names the first layer that differs, and written atomically."""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.config.schema import WEIGHTS_SUFFIX
from bench.errors import BenchInputError, one_line
from bench.results.provenance import file_sha256

if TYPE_CHECKING:
    import keras


def _snake(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def file_layers(model: "keras.Model") -> list[tuple[str, "keras.layers.Layer"]]:
    """(the file's key, layer) for each layer with weights, as Keras' saving names them:
    the class name in snake case, numbered from the second of a kind."""
    seen: dict[str, int] = {}
    out = []
    for layer in model.layers:
        base = _snake(type(layer).__name__)
        n = seen.get(base, 0)
        seen[base] = n + 1
        if layer.weights:
            out.append((base if n == 0 else f"{base}_{n}", layer))
    return out


def check_weights_file(model: "keras.Model", path: str) -> None:
    """BenchInputError naming the first layer whose weights the file does not hold as the
    model needs them (count or shape)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise BenchInputError(f"init_weights={path} is not a Keras .weights.h5 file: {e}") from None
    try:
        with f:
            _check_layers(model, path, f)
    except BenchInputError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py's KeyError/OSError/TypeError on a malformed group
        raise BenchInputError(f"init_weights={path} is not a well-formed Keras .weights.h5 file: "
                              f"{type(e).__name__}: {one_line(e)}") from None


def _check_layers(model: "keras.Model", path: str, f) -> None:
    """The layer groups against the model: each layer's weights in count and shape, none extra."""
    stored = f.get("layers")
    if stored is None:
        raise BenchInputError(f"init_weights={path} holds no layer weights (not a Keras .weights.h5 file)")
    expected = file_layers(model)
    for key, layer in expected:
        group = stored.get(f"{key}/vars")
        have = [] if group is None else [tuple(group[str(i)].shape) for i in range(len(group))]
        want = [tuple(w.shape) for w in layer.weights]
        if have != want:
            raise BenchInputError(f"init_weights={path} does not match {model.name}: layer {layer.name!r} "
                                  f"needs weights of shapes {want}, the file has {have or 'none'}")
    extra = sorted(set(k for k in stored if len(stored[k].get("vars", {}))) - {k for k, _ in expected})
    if extra:
        raise BenchInputError(f"init_weights={path} does not match {model.name}: the file has weights for "
                              f"layers the model lacks, first {extra[0]!r}")


def load_initial_weights(model: "keras.Model", path: str) -> str:
    """Load `path` into `model`; return the sha256 of the file as it was read here, at the start
    of the run (a --save-weights of the same path overwrites it at the end). BenchInputError if
    the file does not fit the model or Keras cannot load it."""
    sha256 = file_sha256(path)
    check_weights_file(model, path)
    with warnings.catch_warnings(record=True) as caught:  # Keras' warnings about a file it then refuses
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as e:  # noqa: BLE001 - right shapes, wrong contents (dtype, ...): still the input
            lines = [l.strip() for l in str(e).splitlines() if l.strip()]
            why = next((l for l in lines if not l.startswith(("A total of", "List of"))), "")
            raise BenchInputError(f"init_weights={path} cannot be loaded into {model.name}: "
                                  f"{type(e).__name__}: {one_line(why)}"[:500]) from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return sha256


def save_weights(model: "keras.Model", path: str) -> None:
    """Write the weights beside `path` and rename them into place: a failed write (a full disk)
    leaves any earlier file at `path` whole, and no partial file behind."""
    p = Path(path)
    # h5py cannot fail a write cleanly: after ENOSPC it crashed the process (SIGSEGV) as it freed its
    # objects. So refuse, as the OS would, where the file cannot fit: its variables plus HDF5's own
    # ~1.6 KiB per variable and layer at most (seen on vgg11, resnet18, lenet5, densenet121), doubled
    need = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights) \
        + 4096 * (len(model.weights) + len(model.layers)) + 65536
    free = shutil.disk_usage(p.parent).free
    if free < need:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free:,} bytes free, the weights need "
                      f"about {need:,})", str(p.parent))
    umask = os.umask(0)
    os.umask(umask)
    mode = p.stat().st_mode & 0o777 if p.is_file() else 0o666 & ~umask  # as a plain write would leave it
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=WEIGHTS_SUFFIX)
    os.close(fd)
    try:
        os.chmod(tmp, mode)
        model.save_weights(tmp)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
