"""The adapter interfaces: what a strategy is once built on a backend.

A strategy's spec (launch/) says, before anything runs, how many processes and replicas it
means and how it is launched; each backend turns a spec into an adapter (its table
`ADAPTERS`, bench.backends.base.Backend). The run layer talks to every adapter through
`Distribution`; a backend's step talks to its own kind: `ReplicaDistribution` (a per-replica
step run by the adapter, as tf.distribute and Horovod run it) or `MeshDistribution` (one
program over a device mesh, as XLA partitions it under JAX).

The conventions every adapter keeps, so that the training math is the same everywhere:
- the step computes its loss as sum(per-example loss) / global batch on each replica;
- gradients are then SUM-reduced across replicas (by the adapter, by the Keras optimizer,
  which sum-all-reduces in a tf.distribute replica context, or by XLA inside a mesh's step),
  giving the global-batch mean;
- `run` returns each output SUM-reduced over replicas.
"""
from __future__ import annotations

import abc
import contextlib
import faulthandler
import os
import subprocess
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from bench.measure.timing import Tracer

DatasetFn = Callable[[int, int, int], Any]  # (num_shards, shard_index, per_replica_batch) -> tf.data.Dataset

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


class Distribution:
    """What the run layer asks of every adapter. Its defaults are one device in one process."""

    name = "single"       # the strategy it implements
    rank = 0
    size = 1              # processes
    local_rank = 0
    num_replicas = 1      # model replicas in total (devices x processes)
    transport = ""        # what carries its collectives where the strategy has a choice (Horovod: mpi, gloo)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def workers(self) -> int:
        return self.size

    def scope(self) -> contextlib.AbstractContextManager:
        """Context in which models and optimizers are built."""
        return contextlib.nullcontext()

    def comm_timeline(self, path: str) -> Tracer:
        """A Tracer that records the strategy's communication into `path` between its start and
        stop (--hvd-timeline; only Horovod has one)."""
        raise RuntimeError(f"--strategy {self.name} has no communication timeline (check_config refuses it)")

    def gather(self, values: Sequence[float]) -> np.ndarray:
        """Every rank's `values` (same length everywhere) as a [size, len] array, on every rank."""
        return np.asarray(values, dtype=float)[None, :]

    def barrier(self) -> None:
        """Wait for every process."""
        self.gather([0.0])

    collective_dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16")  # what allreduce_op can reduce

    def allreduce_op(self, elements: int, dtype: str) -> Callable[[], None]:
        """A function that SUM-all-reduces one message of `elements` values of `dtype` (fp32 or bf16)
        (one of collective_dtypes) across every replica through this strategy's own all-reduce, and waits for it: what
        `python -m bench.collectives` times. The message is made once, not per call."""
        raise NotImplementedError(f"--strategy {self.name} has no all-reduce across replicas")

    def shutdown(self) -> None:
        """Release the strategy's resources."""


class ReplicaDistribution(Distribution):
    """An adapter that runs a per-replica step on each of its replicas (tf.distribute, Horovod).
    Its defaults are one device in one process."""

    jit_collectives = True   # may the gradient all-reduce sit inside an XLA-compiled step?

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

    def skip_gradient_sync(self, optimizer) -> None:
        """--no-gradient-sync: leave out any gradient all-reduce the optimizer makes itself. (The
        trainer skips allreduce_gradients; a strategy whose optimizer all-reduces overrides this.)"""

    def broadcast_initial_state(self, model, optimizer) -> None:
        """Make every replica start from rank 0's weights and optimizer state."""


class MeshDistribution(Distribution, abc.ABC):
    """An adapter that is a mesh of devices with one batch axis (bench.backends.jax.mesh.JaxMesh).
    The step is one jitted program over the mesh, so there is no per-replica `run` or
    `allreduce_gradients`: XLA reduces inside the step."""

    replicated: Any                # the sharding of replicated state (parameters, optimizer slots)
    batch_sharded: Any             # the sharding of a batch (and of per-image outputs)
    local_devices: list            # this process's devices, in mesh order
    mesh: Any                      # the jax.sharding.Mesh
    batch_axis: str                # the mesh's one axis, along which batches are split

    @property
    def local_replicas(self) -> int:
        return len(self.local_devices)

    @abc.abstractmethod
    def shard(self, local_batch: Sequence[np.ndarray]) -> tuple:
        """This process's part of a global batch as global arrays sharded along the batch."""

    @abc.abstractmethod
    def replicate(self, tree: Any) -> Any:
        """A pytree replicated on every device, from process 0's values."""
