"""A run's configuration made ready before anything is built: the checks that need more than the
schema (is the backend's framework installed?), and the one resolution of the defaults that
depend on the machine (`prepare`). bench/run.py and the sweep call it before any run or child
starts; everything downstream takes the resolved, frozen RunConfig it returns."""
from __future__ import annotations

from bench.backends import check_installed
from bench.config.schema import RunConfig
from bench.procs import has_gpu


def check(cfg: RunConfig) -> None:
    """BenchInputError for what the configuration's own rules (bench.config.parse.validate)
    cannot see: a backend whose framework is not installed."""
    check_installed(cfg.backend)


def resolve(cfg: RunConfig) -> RunConfig:
    """`cfg` with its machine-dependent defaults filled (batch size, steps, classes, XLA), from
    what this machine has, asked without starting a framework (bench.procs)."""
    return cfg if cfg.is_resolved else cfg.resolved(has_gpu=has_gpu(cfg.backend))


def prepare(cfg: RunConfig) -> RunConfig:
    """Check, then resolve: the configuration a run is built from."""
    check(cfg)
    return resolve(cfg)


def require_resolved(cfg: RunConfig) -> None:
    """A programming error, not bad input: a run built from an unresolved configuration would
    fill its defaults a second time, somewhere else."""
    if not cfg.is_resolved:
        raise ValueError("the configuration is not resolved: pass it through bench.runner.validate.prepare first")
