"""Distribution: strategy adapters behind one interface (see launch.base.Distribution)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Distribution

if TYPE_CHECKING:
    from bench.config import RunConfig


def make_distribution(cfg: "RunConfig") -> Distribution:
    """The adapter for cfg.strategy. Call before TensorFlow creates any op (it configures devices)."""
    if cfg.strategy == "single":
        return Distribution()
    from bench.errors import BenchInputError
    raise BenchInputError(f"strategy {cfg.strategy!r} is not available yet")


__all__ = ["Distribution", "make_distribution"]
