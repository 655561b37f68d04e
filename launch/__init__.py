"""Distribution: strategy adapters behind one interface (see launch.base.Distribution)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Distribution

if TYPE_CHECKING:
    from bench.config import RunConfig


def make_distribution(cfg: "RunConfig") -> Distribution:
    """The adapter for cfg.strategy. Call before TensorFlow creates any op (it configures devices)."""
    from . import strategies

    if cfg.strategy == "single":
        return Distribution()
    if cfg.strategy == "mirrored":
        return strategies.Mirrored(cfg.cpu_replicas)
    if cfg.strategy == "multiworker":
        return strategies.MultiWorker(cfg.collective_timeout)
    if cfg.strategy == "horovod":
        return strategies.Horovod(cfg.collective_timeout)
    from bench.errors import BenchInputError
    raise BenchInputError(f"unknown strategy: strategy={cfg.strategy!r}")


__all__ = ["Distribution", "make_distribution"]
