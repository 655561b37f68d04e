"""Portable initial weights: a Keras .weights.h5 file, read by either backend, checked against
the model layer by layer so that a mismatch names the first layer that differs."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import BenchInputError

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
    with f:
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


def load_initial_weights(model: "keras.Model", path: str) -> None:
    check_weights_file(model, path)
    model.load_weights(path)
