"""The strategy interface: one framework-free class per strategy (its spec).

A strategy class answers, before anything runs and without importing a framework: its name,
the backends it runs on, how many processes and replicas N workers mean, how it is launched on
one machine and how the cores are split, which options it accepts, and which rank this
process will be. What it is once built, on a backend, is that backend's adapter
(bench.backends.distribution; each backend's table `ADAPTERS`).

The harness only ever calls these methods and its backend's adapter; it never imports horovod
or asks which strategy it runs under.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Protocol

from bench.errors import BenchInputError

# Run options that only some strategies take (each lists its own in `options`), with the value
# that means "not asked for".
STRATEGY_OPTIONS = {"cpu_replicas": 1, "all_reduce": "auto", "all_reduce_pack_mb": None, "hvd_compression": "none",
                    "hvd_fusion_mb": None, "hvd_cycle_ms": None, "hvd_hierarchical": False, "hvd_autotune": False,
                    "hvd_timeline": False}
# Other spellings of a run option's flag, as the strategy's own tools name it.
OPTION_ALIASES = {"hvd_timeline": ("--horovod-timeline",)}
# The Keras backends cnnbench runs on (one subpackage each under bench/backends/).
BACKENDS = ("tensorflow", "jax")
# The longest wait any timeout takes (a sweep's per configuration, a collective's, a local cluster's): 7 days.
MAX_TIMEOUT_S = 7 * 86400.0
# Processes or logical CPU devices per core beyond which they only time-slice the same cores
# while tracing time grows (99 mirrored replicas on 2 cores were still tracing after 400 s).
MAX_PER_CORE = 8


class StrategyConfig(Protocol):
    """What the strategies' checks read of a run's configuration. `bench.config.schema.RunConfig`
    satisfies it; launch/ sits below the configuration layer, so it names only these fields
    (and the strategy-only options of STRATEGY_OPTIONS, read by name)."""
    strategy: str
    backend: str
    mode: str
    all_reduce: str
    cpu_replicas: int
    gradient_sync: bool
    epochs: int

    @property
    def accuracy_mode(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Launch:
    """How to start `bench/run.py` under a strategy with N workers on one machine."""
    prefix: list[str]            # the launcher before `python bench/run.py ...` (empty: in-process)
    env: dict[str, str]          # extra environment for the command
    run_args: list[str]          # extra bench/run.py options the strategy needs
    processes: int               # processes the command starts
    threads: int                 # intra-op threads per process, so processes share the cores


class Strategy:
    """The base of every strategy spec. Its defaults are a single device in one process."""

    name = "single"
    # the backends with an adapter for it (each backend's ADAPTERS table; a test keeps the two equal)
    backends: tuple[str, ...] = ("tensorflow",)
    backend_hint: Mapping[str, str] = {}  # per backend it does not run on: what to use instead
    scalable = True          # False: the worker count is always 1, whatever a sweep asks
    options: tuple[str, ...] = ()  # the STRATEGY_OPTIONS it takes

    @classmethod
    def processes(cls, workers: int) -> int:
        """Processes that N workers mean."""
        return 1

    @classmethod
    def replicas(cls, workers: int, gpus: int) -> int:
        """Model replicas in total that N workers mean on a machine with `gpus` GPUs."""
        return cls.processes(workers)

    @classmethod
    def launcher(cls, workers: int, timeout: float) -> list[str]:
        """The command prefix that starts N workers of `python bench/run.py ...`."""
        return []

    @classmethod
    def launch(cls, workers: int, *, timeout: float, gpus: int, cores: int) -> Launch:
        """Everything needed to run N workers on this machine; the cores are split evenly."""
        n = cls.processes(workers)
        return Launch(cls.launcher(workers, timeout), {}, [], n, max(1, cores // n))

    @classmethod
    def launched_here(cls) -> bool:
        """Whether this process was started by this strategy's own launcher (e.g. horovodrun)."""
        return False

    @classmethod
    def env_rank(cls) -> int:
        """This process's rank as its launcher's environment says, before any initialisation
        (so that a start-up failure still knows whether this process is the chief)."""
        return 0

    @classmethod
    def env_size(cls) -> int:
        """How many processes this strategy's launcher started, as its environment says (1 if none)."""
        return 1

    @classmethod
    def env_local_size(cls) -> int:
        """This run's processes on this host, as the launcher's environment says (they share its RAM)."""
        return 1

    @classmethod
    def env_hosts(cls) -> int:
        """The hosts this run's processes span, as the launcher's environment says (1 if none)."""
        return max(1, -(-cls.env_size() // cls.env_local_size()))

    @classmethod
    def unsupported_backend(cls, backend: str) -> str:
        """The one-line refusal of `backend`, which has no adapter for this strategy."""
        hint = cls.backend_hint.get(backend)
        return f"--strategy {cls.name} does not run on --backend {backend}" + (f": {hint}" if hint else "")

    @classmethod
    def check_config(cls, cfg: "StrategyConfig") -> None:
        """Raise BenchInputError for options this strategy cannot take (the registry's
        launch.check_config has already refused options that belong to other strategies)."""
        if not cfg.gradient_sync and (cls.name == "single" or cfg.mode != "train" or cfg.accuracy_mode):
            raise BenchInputError("--no-gradient-sync is a diagnostic for distributed training throughput: it needs "
                                  "a distributed strategy, --mode train and no --epochs. Received: "
                                  f"strategy={cls.name}, mode={cfg.mode}, epochs={cfg.epochs}")
        if cfg.backend == "jax" and cfg.all_reduce != "auto":
            raise BenchInputError(f"--all-reduce is tf.distribute's; under --backend jax XLA places the "
                                  f"all-reduces. Received: all_reduce={cfg.all_reduce}")

    @classmethod
    def check_environment(cls) -> None:
        """Raise BenchInputError if what the launcher gave this process (e.g. TF_CONFIG) is
        malformed. Called (by launch.check_environment) just before the run starts, not when a
        configuration is parsed (a sweep parses its children's configurations where no launcher
        has run yet)."""

    @classmethod
    def check_launcher_environment(cls) -> None:
        """Raise BenchInputError where this strategy's launcher variables (a rank, a size) are set
        but its launcher did not start this process: whatever strategy runs, they would mislead it."""

    @classmethod
    def check_no_launcher(cls) -> None:
        """Raise BenchInputError where this process's environment holds this strategy's launcher
        variables, in a process that starts its own launchers (a sweep): it is not one rank of a
        job, and every child would inherit them."""
        cls.check_launcher_environment()
        if cls.launched_here() or cls.env_size() > 1:
            raise BenchInputError(f"this process runs as one rank of a --strategy {cls.name} job (its launcher's "
                                  f"variables are set); run the sweep on its own: it launches each configuration")
