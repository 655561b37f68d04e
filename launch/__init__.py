"""The strategy registry. A strategy is one class (see launch.base.Distribution); adding one
means writing its class and adding it to STRATEGIES below. Importing this imports no framework."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bench.errors import BenchInputError

from .base import STRATEGY_OPTIONS, Distribution, Launch
from .strategies import Horovod, Mirrored, MultiWorker, Single

if TYPE_CHECKING:
    from bench.config.schema import RunConfig

STRATEGIES: dict[str, type[Distribution]] = {s.name: s for s in (Single, Mirrored, MultiWorker, Horovod)}


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str) -> type[Distribution]:
    """The strategy class registered as `name`; BenchInputError naming the valid ones if unknown."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise BenchInputError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}") from None


def default_strategy() -> str:
    """The strategy whose launcher started this process (e.g. horovod under horovodrun), else single."""
    return next((name for name, s in STRATEGIES.items() if s.launched_here()), "single")


def check_config(cfg: "RunConfig") -> None:
    """The chosen strategy's own checks, and two that need every strategy: an option that only
    other strategies take, and a one-process strategy in one of several processes that another
    strategy's launcher started (each would write its own row, and their timings would disturb
    each other)."""
    chosen = get_strategy(cfg.strategy)
    if cfg.backend not in chosen.backends:
        raise BenchInputError(f"--strategy {chosen.name} does not run on --backend {cfg.backend}"
                              + (f": {chosen.backend_hint}" if chosen.backend_hint else ""))
    for name, unset in STRATEGY_OPTIONS.items():
        if name not in chosen.options and getattr(cfg, name) != unset:
            takers = " or ".join(s for s, c in STRATEGIES.items() if name in c.options)
            raise BenchInputError(f"--{name.replace('_', '-')} applies to --strategy {takers}. "
                                  f"Received: strategy={chosen.name}, {name}={getattr(cfg, name)}")
    chosen.check_config(cfg)
    for other in STRATEGIES.values():
        n = other.env_size()
        if other is not chosen and n > 1 and chosen.processes(n) == 1:
            raise BenchInputError(f"--strategy {cfg.strategy} runs in one process, but this is one of {n} processes "
                                  f"started for --strategy {other.name}; use --strategy {other.name} (or run "
                                  f"without its launcher)")


def check_environment(name: str) -> None:
    """Just before a run starts (not when a configuration is parsed: a sweep parses its children's
    configurations where no launcher has run yet): BenchInputError if any strategy's launcher
    variables are set by hand (see `Distribution.check_launcher_environment`), or if what the
    launcher gave this process for strategy `name` (e.g. TF_CONFIG) is malformed."""
    for strategy in STRATEGIES.values():
        strategy.check_launcher_environment()
    get_strategy(name).check_environment()


def make_distribution(cfg: "RunConfig") -> Distribution:
    """The adapter for cfg.strategy. Call before TensorFlow creates any op (it configures devices)."""
    return get_strategy(cfg.strategy).from_config(cfg)


__all__ = ["Distribution", "Launch", "STRATEGIES", "check_config", "check_environment", "default_strategy",
           "get_strategy", "make_distribution", "strategy_names"]
