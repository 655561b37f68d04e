"""The strategy registry. A strategy is one class (see launch.base.Distribution); adding one
means writing its class and adding it to STRATEGIES below. Importing this imports no framework."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Distribution, Launch
from .strategies import Horovod, Mirrored, MultiWorker, Single

if TYPE_CHECKING:
    from bench.config.schema import RunConfig

STRATEGIES: dict[str, type[Distribution]] = {s.name: s for s in (Single, Mirrored, MultiWorker, Horovod)}
DEFAULT_STRATEGY = Single.name  # where no launcher chose one, and a sweep's without --strategies


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str) -> type[Distribution]:
    """The strategy class registered as `name`; BenchInputError naming the valid ones if unknown."""
    try:
        return STRATEGIES[name]
    except KeyError:
        from bench.errors import BenchInputError
        raise BenchInputError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}") from None


def default_strategy() -> str:
    """The strategy whose launcher started this process (e.g. horovod under horovodrun), else single."""
    return next((name for name, s in STRATEGIES.items() if s.launched_here()), DEFAULT_STRATEGY)


def check_config(cfg: "RunConfig") -> None:
    """The chosen strategy's own checks, and one misuse no single strategy can see: a
    one-process strategy in one of several processes that another strategy's launcher started
    (each would write its own row, and their timings would disturb each other)."""
    from bench.errors import BenchInputError

    chosen = get_strategy(cfg.strategy)
    if cfg.backend not in chosen.backends:
        raise BenchInputError(f"--strategy {chosen.name} does not run on --backend {cfg.backend}"
                              + (f": {chosen.backend_hint}" if chosen.backend_hint else ""))
    chosen.check_config(cfg)
    for other in STRATEGIES.values():
        n = other.env_size()
        if other is not chosen and n > 1 and chosen.processes(n) == 1:
            raise BenchInputError(f"--strategy {cfg.strategy} runs in one process, but this is one of {n} processes "
                                  f"started for --strategy {other.name}; use --strategy {other.name} (or run "
                                  f"without its launcher)")


def make_distribution(cfg: "RunConfig") -> Distribution:
    """The adapter for cfg.strategy. Call before TensorFlow creates any op (it configures devices)."""
    return get_strategy(cfg.strategy).from_config(cfg)


__all__ = ["DEFAULT_STRATEGY", "Distribution", "Launch", "STRATEGIES", "check_config", "default_strategy", "get_strategy", "make_distribution",
           "strategy_names"]
