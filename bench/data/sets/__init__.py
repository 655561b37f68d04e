"""The data sets a run can name, one module each in this package, found by scanning it: a new
data set is one module defining `DATA_SET`. Each declares its name, natural class count, whether
it reads `--data-dir`, the bytes it keeps resident, and its reader, which uses numpy alone so
that bad data is a one-line error before any framework starts. This package sits below the
configuration (which takes its choices and defaults from `DATA_SETS`) and imports only errors."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from bench.data.sets.split import Split

if TYPE_CHECKING:
    from bench.data.sets.files import Stream

Reader = Callable[[str | None], tuple[Split, Split]]
Streamer = Callable[[str | None], "Stream"]


@dataclass(frozen=True)
class DataSet:
    name: str                   # the --data value
    classes: int                # the natural class count: --num-classes' default
    about: str                  # one phrase for --data's help
    read: Reader | None = None  # (data_dir) -> (train, test) at native size; None: synthetic or streamed
    # the streaming kind: (data_dir) -> the files indexed and checked, not decoded; the images are
    # read, decoded and cropped per step by a pipeline per backend (bench.data.stream)
    stream: Streamer | None = None
    count_classes: Callable[[str | None, int], int] | None = None  # (data_dir, label_offset) -> default classes
    classes_about: str = ""     # --num-classes' help where count_classes decides (default: `classes`)
    dir_help: str = ""          # what --data-dir may point at; empty: the data set takes no --data-dir
    resident_bytes: int = 0     # the read splits' arrays in memory (the memory estimate adds them)
    order: int = 100            # place in --data's choices (the default comes first)

    @property
    def real(self) -> bool:
        """Has train and test splits, so accuracy mode (--epochs) and augmentation apply."""
        return self.read is not None or self.stream is not None

    @property
    def streaming(self) -> bool:
        return self.stream is not None

    def default_classes(self, data_dir: str | None, label_offset: int = 0) -> int:
        """--num-classes' default. A folder that cannot be counted gives the declared count: reading
        the data set then names what is wrong with it."""
        if self.count_classes is None:
            return self.classes
        try:
            return self.count_classes(data_dir, label_offset) or 1
        except Exception:  # noqa: BLE001 - reported by the reader, on one line
            return max(self.classes, 1)

    @property
    def takes_dir(self) -> bool:
        return bool(self.dir_help)


def _discover() -> dict[str, DataSet]:
    # importlib, not import statements: the modules are found, not listed (one module per data set)
    found: dict[str, DataSet] = {}
    for info in pkgutil.iter_modules(__path__):
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "DATA_SET", None)
        if isinstance(spec, DataSet):
            if spec.name in found:
                raise AssertionError(f"two data sets named {spec.name!r}")  # a bug, never input
            found[spec.name] = spec
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


DATA_SETS: dict[str, DataSet] = _discover()
