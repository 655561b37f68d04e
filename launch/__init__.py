"""The strategy registry. A strategy is one framework-free class (see launch.base.Strategy);
adding one means writing its class, adding it to STRATEGIES below, and giving each backend
that runs it an adapter (its ADAPTERS table). Importing this imports no framework."""
from __future__ import annotations

from bench.errors import BenchInputError

from .base import STRATEGY_OPTIONS, Launch, Strategy, StrategyConfig
from .hosts import where as emulated_host
from .strategies import Horovod, Mirrored, MultiWorker, Single

STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Single, Mirrored, MultiWorker, Horovod)}
DEFAULT_STRATEGY = Single.name  # where no launcher chose one, and a sweep's without --strategies


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as `name`; BenchInputError naming the valid ones if unknown."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise BenchInputError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}") from None


def default_strategy() -> str:
    """The strategy whose launcher started this process (e.g. horovod under horovodrun), else single."""
    return next((name for name, s in STRATEGIES.items() if s.launched_here()), DEFAULT_STRATEGY)


def check_config(cfg: "StrategyConfig") -> None:
    """The chosen strategy's own checks, and what no single strategy can see: an option that
    belongs to other strategies, and a one-process strategy in one of several processes that
    another strategy's launcher started (each would write its own row, and their timings would
    disturb each other)."""
    chosen = get_strategy(cfg.strategy)
    if cfg.backend not in chosen.backends:
        raise BenchInputError(chosen.unsupported_backend(cfg.backend))
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
    """Just before a run under strategy `name` starts: BenchInputError where any strategy's
    launcher variables are set by hand (Strategy.check_launcher_environment), or where what the
    launcher gave this process (e.g. TF_CONFIG) is malformed."""
    for strategy in STRATEGIES.values():
        strategy.check_launcher_environment()
    get_strategy(name).check_environment()


__all__ = ["DEFAULT_STRATEGY", "Launch", "STRATEGIES", "Strategy", "check_config", "check_environment", "default_strategy",
           "emulated_host",
           "get_strategy", "strategy_names"]
