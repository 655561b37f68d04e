"""The distribution adapter: everything strategy-specific behind one small interface.

The harness (bench/) only ever calls these methods; it never imports horovod or checks which
strategy it runs under. The conventions every adapter keeps, so that the training math is the
same everywhere:
- the step computes its loss as sum(per-example loss) / global batch on each replica;
- gradients are then SUM-reduced across replicas (by the adapter, or by the Keras optimizer,
  which sum-all-reduces in a tf.distribute replica context), giving the global-batch mean;
- `run` returns each output SUM-reduced over replicas.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Sequence

import numpy as np

DatasetFn = Callable[[int, int, int], Any]  # (num_shards, shard_index, per_replica_batch) -> tf.data.Dataset


class Distribution:
    """Single device. Subclasses override what their strategy changes."""

    name = "single"
    rank = 0
    size = 1              # processes
    local_rank = 0
    num_replicas = 1      # model replicas in total (devices x processes)
    jit_collectives = True  # may the gradient all-reduce sit inside an XLA-compiled step?

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

    def allreduce_gradients(self, grads: list) -> list:
        """SUM gradients across processes where the optimizer does not already do it."""
        return grads

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

    def describe(self) -> dict:
        return {"strategy": self.name, "workers": self.workers, "replicas": self.num_replicas,
                "rank": self.rank}
