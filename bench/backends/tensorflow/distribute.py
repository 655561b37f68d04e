"""The TensorFlow adapters of the strategies (launch/ holds their framework-free specs): one
device, tf.distribute's MirroredStrategy and MultiWorkerMirroredStrategy, and Horovod.
Frameworks are imported inside the methods: the table of adapters is read before any is built."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from bench.backends.distribution import DatasetFn, ReplicaDistribution, startup_watchdog
from bench.errors import BenchInputError
from bench.measure.timing import Tracer
from bench.measure.traces import AUTOTUNE_LOG
from launch.strategies import Horovod as HorovodSpec
from launch.strategies import Mirrored as MirroredSpec
from launch.strategies import MultiWorker as MultiWorkerSpec
from launch.strategies import in_slurm_step, slurm_task_gpus, slurm_tasks_per_node, tf_config

if TYPE_CHECKING:
    from bench.config.schema import RunConfig


# --dtypes of bench.collectives -> TensorFlow's
TF_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class Single(ReplicaDistribution):
    """One device in one process: the interface's own defaults."""

    name = "single"

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> "Single":
        return cls()


class TFDistribution(ReplicaDistribution):
    """Common ground of the tf.distribute strategies. Keras 3 optimizers SUM-all-reduce the
    gradients themselves in a replica context, so allreduce_gradients stays the identity."""

    strategy: Any

    def scope(self):
        return self.strategy.scope()

    def distribute(self, dataset_fn: DatasetFn, per_replica_batch: int) -> Iterable:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            # On accelerators the distributed iterator prefetches each replica's batches onto
            # its device.
            def fn(ctx):
                return dataset_fn(ctx.num_input_pipelines, ctx.input_pipeline_id, per_replica_batch)
            return self.strategy.distribute_datasets_from_function(fn)
        # On CPUs there is nothing to prefetch onto, and a live distributed iterator slowed
        # every step by ~17% (vgg13, width 1, one replica): feed each replica from its own
        # plain tf.data iterator over its shard instead.
        return self._per_replica_batches(dataset_fn, per_replica_batch)

    def _per_replica_batches(self, dataset_fn: DatasetFn, per_replica_batch: int) -> Iterator:
        iterators: dict[int, Iterator] = {}

        def value_fn(ctx):
            rid = ctx.replica_id_in_sync_group
            if rid not in iterators:
                iterators[rid] = iter(dataset_fn(ctx.num_replicas_in_sync, rid, per_replica_batch))
            return next(iterators[rid])

        while True:
            yield self.strategy.experimental_distribute_values_from_function(value_fn)

    def distribute_fixed(self, dataset_fn: DatasetFn, per_replica_batch: int) -> Any:
        # Per-replica values, not a distributed iterator, which would keep running (see above).
        import tensorflow as tf

        def value_fn(ctx):
            ds = dataset_fn(ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group, per_replica_batch)
            return tuple(tf.identity(t) for t in next(iter(ds)))  # identity: onto the replica's device
        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def run(self, fn: Callable, args: Sequence) -> Any:
        import tensorflow as tf

        out = self.strategy.run(fn, args=tuple(args))
        return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, o, axis=None) for o in out)

    def run_local(self, fn: Callable, args: Sequence) -> Any:
        import tensorflow as tf

        out = self.strategy.run(fn, args=tuple(args))
        return tuple(tf.add_n(list(self.strategy.experimental_local_results(o))) for o in out)

    def gather(self, values: Sequence[float]) -> np.ndarray:
        import tensorflow as tf

        local = tf.constant(np.asarray(values, dtype=np.float64)[None, :])

        @tf.function
        def all_gather():
            return self.strategy.run(
                lambda: tf.distribute.get_replica_context().all_gather(local, axis=0))

        # Each local replica contributes the same row; duplicates do not change a max or a mean.
        gathered = self.strategy.experimental_local_results(all_gather())[0]
        return gathered.numpy()

    def allreduce_op(self, elements: int, dtype: str) -> Callable[[], None]:
        import tensorflow as tf

        # one message, made once, that every local replica reduces (as gather's all_gather does: a
        # per-replica value made outside the step leaves MultiWorkerMirroredStrategy's all-reduce
        # with no destination device on a CPU)
        message = tf.ones([elements], TF_DTYPES[dtype])

        @tf.function
        def allreduce():  # tf.distribute: the replica context's all-reduce, as Keras' optimizers call it
            return self.strategy.run(
                lambda: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, message))

        def op() -> None:
            for out in self.strategy.experimental_local_results(allreduce()):
                out[:1].numpy()  # waits for the collective on every local replica
        return op

    def skip_gradient_sync(self, optimizer) -> None:
        # Keras 3 optimizers SUM-all-reduce the gradients in a replica context before applying
        # them; without it each replica applies its own gradients to its own copy of the weights
        for opt in (optimizer, getattr(optimizer, "inner_optimizer", None)):
            if opt is not None:
                opt._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)

    def replica_values(self, variable) -> list[np.ndarray]:
        """Each local replica's copy of a variable (for equivalence checks)."""
        tf_var = getattr(variable, "value", variable)  # a Keras 3 Variable wraps the tf.Variable
        return [np.asarray(v) for v in self.strategy.experimental_local_results(tf_var)]


class Mirrored(TFDistribution):
    """tf.distribute.MirroredStrategy over the GPUs, or over N logical CPU devices."""

    name = "mirrored"

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> "Mirrored":
        return cls(cfg.cpu_replicas, cfg.all_reduce)

    def __init__(self, cpu_replicas: int = 1, all_reduce: str = "auto"):
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        ops = getattr(tf.distribute, MirroredSpec.CROSS_DEVICE_OPS[all_reduce])() if all_reduce != "auto" else None
        if gpus:
            self.strategy = tf.distribute.MirroredStrategy(cross_device_ops=ops)
        else:
            # Split the CPU into logical devices so the real strategy runs on CPU-only machines.
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            self.strategy = tf.distribute.MirroredStrategy(
                devices, cross_device_ops=ops or tf.distribute.ReductionToOneDevice())
        self.num_replicas = self.strategy.num_replicas_in_sync


class MultiWorker(TFDistribution):
    """tf.distribute.MultiWorkerMirroredStrategy, configured by TF_CONFIG, or, where there is none,
    by the Slurm job step srun started this process in (TensorFlow's own SlurmClusterResolver)."""

    name = "multiworker"

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> "MultiWorker":
        return cls(cfg.collective_timeout, cfg.all_reduce, cfg.all_reduce_pack_mb)

    def __init__(self, collective_timeout: float, all_reduce: str = "auto", pack_mb: float | None = None):
        import tensorflow as tf

        impl = tf.distribute.experimental.CommunicationImplementation[
            MultiWorkerSpec.COMMUNICATION.get(all_reduce, "AUTO")]
        # gradients are packed into all-reduces of bytes_per_pack (0: the strategy's own packing)
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout, implementation=impl,
            bytes_per_pack=int(pack_mb * 2**20) if pack_mb else 0)
        if in_slurm_step():
            resolver = _slurm_resolver()
            cluster = resolver.cluster_spec().as_dict()
            task = {"type": resolver.task_type, "index": resolver.task_id}
            source = "the Slurm step"
        else:
            resolver = None  # the strategy's own TFConfigClusterResolver
            cluster, task = tf_config()
            source = "TF_CONFIG's cluster"
        workers = [*cluster.get("chief", []), *cluster.get("worker", [])]
        # The strategy waits here, inside TensorFlow's C++, until every task of the cluster has
        # joined, however long that takes, whatever the collective timeout
        with startup_watchdog(collective_timeout, f"error: multiworker start-up: not every task of {source} "
                              f"({', '.join(workers)}) joined within --collective-timeout "
                              f"{collective_timeout:g} s; {task['type']} {task['index']} gave up"):
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                                      communication_options=options)
        self.size = len(workers)
        self.rank = task["index"] + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)
        self.local_rank = 0
        self.num_replicas = self.strategy.num_replicas_in_sync

    def shutdown(self) -> None:
        # A last barrier keeps the chief from exiting (and tearing down its gRPC server) while
        # a peer still needs it for a collective.
        self.barrier()


# Each job step's workers listen on ports of their own (TensorFlow's default base, 8888, would let
# two jobs on one node collide): 32 per node from a base the job and step ids pick, below Linux's
# ephemeral range (32768 and up), where the kernel hands out ports to outgoing connections.
SLURM_PORT_BASE, SLURM_PORT_SLOTS, SLURM_PORTS_PER_STEP = 12000, 640, 32


def _slurm_port_base() -> int:
    job, step = (int(os.environ.get(v, "0") or 0) for v in ("SLURM_JOB_ID", "SLURM_STEP_ID"))
    return SLURM_PORT_BASE + ((job * 7 + step) % SLURM_PORT_SLOTS) * SLURM_PORTS_PER_STEP


def _slurm_resolver():
    """tf.distribute.cluster_resolver.SlurmClusterResolver for this task, its GPUs chosen here.

    The resolver counts GPUs with nvidia-smi, which CPU nodes lack, and its task list stops at the
    node's GPU count (zero: no tasks at all). So it is told each task's share (at least 1, to list
    every task), and the strategy is told the GPUs this task really uses (none on a CPU node)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    mine = [gpus[i] for i in slurm_task_gpus(len(gpus))]
    if gpus:
        tf.config.set_visible_devices(mine, "GPU")  # Slurm's allocation, shared among the node's tasks
    per_task = max(1, len(mine))
    most_tasks = max(slurm_tasks_per_node() or [MultiWorkerSpec.env_local_size()])

    class Resolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
        def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
            return {"GPU": len(mine)}

    return Resolver(port_base=_slurm_port_base(), gpus_per_node=per_task * most_tasks, gpus_per_task=per_task,
                    auto_set_gpu=False)


class Horovod(ReplicaDistribution):
    """horovod.tensorflow, launched by horovodrun (Gloo on CPU; NCCL/MPI where built).

    Every Horovod call of cnnbench is in this class. Keras 3 breaks
    hvd.DistributedGradientTape and hvd.broadcast_variables, so gradients go through
    hvd.grouped_allreduce and the initial state through one hvd.broadcast per variable."""

    name = "horovod"
    jit_collectives = False  # Horovod's ops have no XLA kernels in this build
    collective_dtypes = ("fp32", "fp16")  # Horovod's TensorFlow all-reduce has no bfloat16 kernel

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> "Horovod":
        autotune_log = str(Path(cfg.trace_dir) / AUTOTUNE_LOG) if cfg.hvd_autotune else None
        return cls(cfg.collective_timeout, compression=cfg.hvd_compression, fusion_mb=cfg.hvd_fusion_mb,
                   cycle_ms=cfg.hvd_cycle_ms, hierarchical=cfg.hvd_hierarchical, autotune_log=autotune_log,
                   timeline=cfg.hvd_timeline)

    def __init__(self, collective_timeout: float, *, compression: str = "none", fusion_mb: float | None = None,
                 cycle_ms: float | None = None, hierarchical: bool = False, autotune_log: str | None = None,
                 timeline: bool = False):
        # Horovod: stall detection and shutdown, so a hung rank cannot block the job forever.
        os.environ.setdefault("HOROVOD_STALL_CHECK_TIME_SECONDS", str(max(5, int(collective_timeout // 4))))
        os.environ.setdefault("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", str(int(collective_timeout)))
        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(int(collective_timeout)))
        # Horovod: tensor fusion and cycle time, read once by hvd.init()
        if fusion_mb is not None:
            os.environ["HOROVOD_FUSION_THRESHOLD"] = str(int(fusion_mb * 2**20))
        if cycle_ms is not None:
            os.environ["HOROVOD_CYCLE_TIME"] = f"{cycle_ms:g}"
        if autotune_log is not None:  # Horovod: the autotuner; the coordinator logs every sample it scores
            if HorovodSpec.env_rank() == 0:
                Path(autotune_log).parent.mkdir(parents=True, exist_ok=True)
            os.environ.update(HOROVOD_AUTOTUNE="1", HOROVOD_AUTOTUNE_LOG=autotune_log)
        if timeline:  # Horovod: a timeline started and stopped from Python, around the timed steps
            os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"
        import horovod.tensorflow as hvd
        import tensorflow as tf

        if HorovodSpec.mpi_launched() and not hvd.mpi_built():
            # Horovod: without MPI, hvd.init() under mpirun finds no Gloo rendezvous either and aborts in C++
            raise BenchInputError("mpirun started this process, but this Horovod is built without MPI: rebuild it "
                                  "with `bash scripts/setup.sh` where Open MPI's mpicxx is installed (`--cluster` "
                                  "installs it), or launch with horovodrun --gloo")
        gpus = tf.config.list_physical_devices("GPU")
        if hierarchical:
            # Horovod 0.28.1's one hierarchical all-reduce is NCCLHierarchicalAllreduce (NCCL within a host,
            # MPI across hosts): on a build without NCCL, or on CPU tensors, it sets the flag back to off
            # (horovod/common/operations.cc, "not supported without NCCL or DDL") and runs the flat
            # all-reduce, which the row would then call hierarchical
            if not (hvd.nccl_built() and gpus):
                raise BenchInputError(
                    "--hvd-hierarchical needs GPUs and a Horovod built with NCCL and MPI (Horovod's only hierarchical "
                    f"all-reduce is NCCL's; on {'this build' if gpus else 'CPUs'} Horovod would run the flat "
                    "all-reduce instead). Received: hvd_hierarchical=True")
            os.environ["HOROVOD_HIERARCHICAL_ALLREDUCE"] = "1"
        if not gpus:
            # Open MPI (read by MPI_Init in hvd.init(); an explicit setting is kept): a rank waiting in MPI
            # yields its core instead of spinning on it. On CPUs the ranks' compute threads want every core;
            # Horovod's MPI thread, spinning at each cycle, took one from them: on a 2-core VM, mpirun -np 2
            # steps of a tiny resnet18 took about twice as long spinning (docs/distribution.md#open-mpi)
            os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        hvd.init()  # Horovod: initialise
        self.hvd = hvd
        # Horovod: MPI where its launcher was mpirun (or horovodrun --mpi), else Gloo
        self.transport = "mpi" if hvd.mpi_enabled() else "gloo"
        if hierarchical and not (hvd.mpi_enabled() and hvd.size() > hvd.local_size()):
            # Horovod: the NCCL hierarchical all-reduce is registered only under the MPI controller, and
            # turned off where all ranks share one host; every rank decides the same, so all refuse
            raise BenchInputError(
                "--hvd-hierarchical needs ranks on more than one host, started by mpirun or horovodrun --mpi "
                f"(here: {'MPI' if hvd.mpi_enabled() else 'Gloo'}, {hvd.size()} ranks, {hvd.local_size()} on this "
                "host); Horovod would run the flat all-reduce instead. Received: hvd_hierarchical=True")
        # Horovod: gradients cast to fp16 for the all-reduce and back (Compression.fp16)
        self.compression = hvd.Compression.fp16 if compression == "fp16" else hvd.Compression.none
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
        self.num_replicas = self.size
        if gpus:  # Horovod: pin one GPU per local rank
            gpu = gpus[self.local_rank % len(gpus)]
            tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.set_visible_devices(gpu, "GPU")

    def distribute(self, dataset_fn: DatasetFn, per_replica_batch: int) -> Iterable:
        return dataset_fn(self.size, self.rank, per_replica_batch)  # Horovod: one shard per rank

    def run(self, fn: Callable, args: Sequence) -> Any:
        out = fn(*args)
        if self.size == 1:  # nothing to reduce; like Horovod's own optimizers, skip the collective
            return out
        # Horovod: metrics summed over ranks (each rank's loss is already over the global batch),
        # in one grouped collective: every extra collective costs a negotiation cycle per step
        return tuple(self.hvd.grouped_allreduce(list(out), op=self.hvd.Sum))

    def allreduce_gradients(self, grads: list) -> list:
        if self.size == 1:  # as Horovod's own gradient all-reduce (_grouped_allreduce_cond) does
            return grads
        # Horovod: SUM, since each rank's loss is divided by the global batch
        return self.hvd.grouped_allreduce(grads, op=self.hvd.Sum, compression=self.compression)

    def allreduce_op(self, elements: int, dtype: str) -> Callable[[], None]:
        import tensorflow as tf

        message = tf.ones([elements], TF_DTYPES[dtype])

        def op() -> None:  # Horovod: one SUM all-reduce, with the run's compression; .numpy() waits for it
            self.hvd.allreduce(message, op=self.hvd.Sum, compression=self.compression, name="collective")[:1].numpy()
        return op

    def comm_timeline(self, path: str) -> Tracer:
        # Horovod: every rank starts and stops it; the coordinator writes the file
        return Tracer(lambda: self.hvd.start_timeline(path), self.hvd.stop_timeline, lambda k: contextlib.nullcontext())

    def broadcast_initial_state(self, model, optimizer) -> None:
        # Horovod: rank 0's weights and optimizer state to every rank
        for i, v in enumerate([*model.variables, *(optimizer.variables if optimizer else [])]):
            v.assign(self.hvd.broadcast(v.value, root_rank=0, name=f"init.{i}"))

    def gather(self, values: Sequence[float]) -> np.ndarray:
        import tensorflow as tf

        local = tf.constant(np.asarray(values, dtype=np.float64)[None, :])
        return self.hvd.allgather(local, name=f"gather.{len(values)}").numpy()  # Horovod

    def shutdown(self) -> None:
        self.hvd.shutdown()
