"""The strategy interface: everything strategy-specific behind one class per strategy.

A strategy class answers two kinds of question:
- before anything runs, as class methods that import no framework: its name, its backends,
  how many processes and replicas N workers mean, how it is launched on one machine and how
  the cores are split, which options it accepts, and which rank this process will be;
- once built (`from_config`), as the adapter the harness trains through: scope, data
  distribution, the per-replica step, gradient all-reduce, broadcast and gather.

The harness (bench/) only ever calls these methods; it never imports horovod or asks which
strategy it runs under. The conventions every adapter keeps, so that the training math is the
same everywhere:
- the step computes its loss as sum(per-example loss) / global batch on each replica;
- gradients are then SUM-reduced across replicas (by the adapter, or by the Keras optimizer,
  which sum-all-reduces in a tf.distribute replica context), giving the global-batch mean;
- `run` returns each output SUM-reduced over replicas.
"""
from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from bench.errors import BenchInputError

if TYPE_CHECKING:
    from bench.config.schema import RunConfig

DatasetFn = Callable[[int, int, int], Any]  # (num_shards, shard_index, per_replica_batch) -> tf.data.Dataset

# Run options that only some strategies take (each lists its own in `options`), with the value
# that means "not asked for".
STRATEGY_OPTIONS = {"cpu_replicas": 1, "all_reduce": "auto", "all_reduce_pack_mb": None, "hvd_compression": "none",
                    "hvd_fusion_mb": None, "hvd_cycle_ms": None, "hvd_hierarchical": False, "hvd_autotune": False,
                    "hvd_timeline": False}
# Other spellings of a run option's flag, as the strategy's own tools name it.
OPTION_ALIASES = {"hvd_timeline": ("--horovod-timeline",)}


# The helper that turns the watchdog's traceback dump into one line: it reads until the watched
# process ends or disarms it (EOF); only a dump (the deadline passed) makes it speak.
_WATCHDOG = "import sys\nif sys.stdin.buffer.read():\n    sys.stderr.write(sys.argv[1] + '\\n')\n"


@contextlib.contextmanager
def startup_watchdog(seconds: float, message: str):
    """Bound a start-up wait that can block inside a framework's C++ with the GIL held: there no
    Python thread or signal handler runs, and TensorFlow catches SIGTERM, so such a process
    waited 10 minutes past its collective timeout and only SIGKILL ended it. Past `seconds`,
    faulthandler's own C thread (it needs no GIL) ends the process with exit code 1, writing its
    traceback dump into a pipe; a helper process reading that pipe then prints `message` as the
    one line that says why. Leaving the block in time disarms both."""
    read, write = os.pipe()
    try:
        helper = subprocess.Popen([sys.executable, "-c", _WATCHDOG, message], stdin=read, stdout=subprocess.DEVNULL)
    finally:
        os.close(read)
    dump = os.fdopen(write, "w")
    faulthandler.dump_traceback_later(seconds, exit=True, file=dump)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        dump.close()  # EOF: the helper ends without a word
        helper.wait()


@dataclasses.dataclass(frozen=True)
class Launch:
    """How to start `bench/run.py` under a strategy with N workers on one machine."""
    prefix: list[str]            # the launcher before `python bench/run.py ...` (empty: in-process)
    env: dict[str, str]          # extra environment for the command
    run_args: list[str]          # extra bench/run.py options the strategy needs
    processes: int               # processes the command starts
    threads: int                 # intra-op threads per process, so processes share the cores


class Distribution:
    """The base of every strategy. Its defaults are a single device in one process."""

    name = "single"
    backends: tuple[str, ...] = ("tensorflow",)
    backend_hint = ""        # what to use instead, for a backend this strategy does not support
    scalable = True          # False: the worker count is always 1, whatever a sweep asks
    jit_collectives = True   # may the gradient all-reduce sit inside an XLA-compiled step?
    options: tuple[str, ...] = ()  # the STRATEGY_OPTIONS it takes

    # ---- before anything runs: class methods, no framework imported ---------------------------
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
    def check_config(cls, cfg: "RunConfig") -> None:
        """Raise BenchInputError for options this strategy cannot take. (Options that belong to
        other strategies are the registry's check: `launch.check_config`.)"""
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
        malformed. The registry's `launch.check_environment` calls it after every strategy's
        `check_launcher_environment`."""

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

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> "Distribution":
        """The adapter. Call before TensorFlow creates any op (some strategies configure devices)."""
        return cls()

    # ---- the adapter ------------------------------------------------------------------------------
    rank = 0
    size = 1              # processes
    local_rank = 0
    num_replicas = 1      # model replicas in total (devices x processes)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def workers(self) -> int:
        return self.size

    def scope(self) -> contextlib.AbstractContextManager:
        """Context in which models and optimizers are built."""
        return contextlib.nullcontext()

    def distribute(self, dataset_fn: DatasetFn, per_replica_batch: int) -> Iterable:
        """An iterable of per-replica batches, each worker reading its own shard."""
        return dataset_fn(1, 0, per_replica_batch)

    def distribute_fixed(self, dataset_fn: DatasetFn, per_replica_batch: int) -> Any:
        """Each replica's first batch of its shard, made once and held on its device, with no
        iterator left running (for synthetic data, reused every step)."""
        return next(iter(dataset_fn(self.size, self.rank, per_replica_batch)))

    def run(self, fn: Callable, args: Sequence) -> Any:
        """Run the per-replica step on every replica; outputs SUM-reduced over replicas."""
        return fn(*args)

    def run_local(self, fn: Callable, args: Sequence) -> Any:
        """Run `fn` on this process's replicas; outputs summed over them, with no communication
        between processes (inference: every rank's batches are its own)."""
        return fn(*args)

    def allreduce_gradients(self, grads: list) -> list:
        """SUM gradients across processes where the optimizer does not already do it."""
        return grads

    def comm_timeline(self, path: str) -> Any:
        """A bench.measure.timing.Tracer that records the strategy's communication into `path` between
        its start and stop (--hvd-timeline; only Horovod has one)."""
        raise RuntimeError(f"--strategy {self.name} has no communication timeline (check_config refuses it)")

    def skip_gradient_sync(self, optimizer) -> None:
        """--no-gradient-sync: leave out any gradient all-reduce the optimizer makes itself. (The
        trainer skips allreduce_gradients; a strategy whose optimizer all-reduces overrides this.)"""

    def broadcast_initial_state(self, model, optimizer) -> None:
        """Make every replica start from rank 0's weights and optimizer state."""

    def gather(self, values: Sequence[float]) -> np.ndarray:
        """Every rank's `values` (same length everywhere) as a [size, len] array, on every rank."""
        return np.asarray(values, dtype=float)[None, :]

    def barrier(self) -> None:
        """Wait for every process."""
        self.gather([0.0])

    def shutdown(self) -> None:
        """Release the strategy's resources."""


class MeshDistribution(Distribution):
    """The adapter interface under --backend jax (bench.backends.jax.mesh.JaxMesh implements it): a
    mesh of devices with one batch axis. The step is one jitted program over the mesh, so
    there is no per-replica `run` or `allreduce_gradients`: XLA reduces inside the step."""

    replicated: Any                # the sharding of replicated state (parameters, optimizer slots)
    batch_sharded: Any             # the sharding of a batch (and of per-image outputs)
    local_devices: list            # this process's devices, in mesh order
    mesh: Any                      # the jax.sharding.Mesh
    batch_axis: str                # the mesh's one axis, along which batches are split

    @property
    def local_replicas(self) -> int:
        return len(self.local_devices)

    def shard(self, local_batch: Sequence[np.ndarray]) -> tuple:
        """This process's part of a global batch as global arrays sharded along the batch."""
        raise NotImplementedError

    def replicate(self, tree: Any) -> Any:
        """A pytree replicated on every device, from process 0's values."""
        raise NotImplementedError
