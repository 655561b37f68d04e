"""The strategies: single device, tf.distribute (mirrored, multiworker) and Horovod.
See launch.base for the contract. Nothing here imports a framework at module level."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .base import BACKENDS, MAX_PER_CORE, DatasetFn, Distribution, Launch, startup_watchdog

if TYPE_CHECKING:
    from bench.config.schema import RunConfig



class Single(Distribution):
    """One device in one process."""

    name = "single"
    backends = BACKENDS
    scalable = False

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> Distribution:
        if cfg.backend == "jax":
            from bench.backends.jax import mesh as jax_mesh
            return jax_mesh.single()
        return cls()


class TFDistribution(Distribution):
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
    backends = BACKENDS
    options = ("cpu_replicas", "all_reduce")
    # --all-reduce -> tf.distribute's cross-device ops class (auto: the strategy's own choice)
    CROSS_DEVICE_OPS = {"nccl": "NcclAllReduce", "hierarchical": "HierarchicalCopyAllReduce",
                        "one-device": "ReductionToOneDevice"}

    @classmethod
    def replicas(cls, workers: int, gpus: int) -> int:
        return min(workers, gpus) if gpus else workers

    @classmethod
    def launch(cls, workers: int, *, timeout: float, gpus: int, cores: int) -> Launch:
        if gpus:  # mirrored over the first N GPUs
            return Launch([], {"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(min(workers, gpus))))}, [], 1, cores)
        return Launch([], {}, ["--cpu-replicas", str(workers)], 1, cores)

    @classmethod
    def check_config(cls, cfg: "RunConfig") -> None:
        super().check_config(cfg)
        # Each logical CPU device holds a model replica and its own traced step (launch.base.MAX_PER_CORE).
        cap = MAX_PER_CORE * (os.cpu_count() or 1)
        if cfg.cpu_replicas > cap:
            from bench.errors import BenchInputError
            raise BenchInputError(f"cpu_replicas must be <= {cap} ({MAX_PER_CORE} per core on this "
                                  f"{os.cpu_count()}-core machine). Received: cpu_replicas={cfg.cpu_replicas}")
        _check_all_reduce(cfg, cls.CROSS_DEVICE_OPS, gpu_only=("nccl", "hierarchical"))

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> Distribution:
        if cfg.backend == "jax":  # one process, data-parallel over a mesh of the local devices
            from bench.backends.jax import mesh as jax_mesh
            return jax_mesh.mirrored(cfg.cpu_replicas)
        return cls(cfg.cpu_replicas, cfg.all_reduce)

    def __init__(self, cpu_replicas: int = 1, all_reduce: str = "auto"):
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        ops = getattr(tf.distribute, self.CROSS_DEVICE_OPS[all_reduce])() if all_reduce != "auto" else None
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


def _check_all_reduce(cfg: "RunConfig", choices: dict, gpu_only: tuple[str, ...]) -> None:
    """BenchInputError for an --all-reduce this strategy has no implementation of, or one that
    needs GPUs on a machine without them."""
    from bench.errors import BenchInputError
    from bench.measure.hardware import gpu_count

    if cfg.all_reduce != "auto" and cfg.all_reduce not in choices:
        raise BenchInputError(f"--strategy {cfg.strategy} has no {cfg.all_reduce} all-reduce; valid: auto, "
                              f"{', '.join(choices)}. Received: all_reduce={cfg.all_reduce}")
    if cfg.all_reduce in gpu_only and gpu_count() == 0:
        raise BenchInputError(f"--all-reduce {cfg.all_reduce} needs GPUs, and this machine has none. "
                              f"Received: all_reduce={cfg.all_reduce}")


TF_CONFIG_TASKS = ("chief", "worker")


def _tf_config() -> tuple[dict, dict]:
    """TF_CONFIG's cluster and task, checked; BenchInputError naming what is wrong."""
    from bench.errors import BenchInputError

    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise BenchInputError("--strategy multiworker needs TF_CONFIG with 'cluster' and 'task' "
                              "(use `python -m launch.local_cluster -n N -- ...` on one machine)")
    try:
        tf_config = json.loads(raw)
    except ValueError as e:
        raise BenchInputError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster, task = (tf_config.get("cluster"), tf_config.get("task")) if isinstance(tf_config, dict) else (None, None)
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise BenchInputError("TF_CONFIG needs a 'cluster' object and a 'task' object. Received: TF_CONFIG=" + raw)
    for kind, hosts in cluster.items():
        if not isinstance(hosts, list) or not all(isinstance(h, str) and ":" in h for h in hosts):
            raise BenchInputError(f"TF_CONFIG cluster {kind!r} must be a list of 'host:port' strings. "
                                  f"Received: {hosts!r}")
        for h in hosts:
            host, port = h.rsplit(":", 1)
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise BenchInputError(f"TF_CONFIG cluster {kind!r} names an impossible address (a host, then a port "
                                      f"in 1-65535). Received: {h!r}")
    # MultiWorkerMirroredStrategy coordinates chief and worker tasks only: a parameter server or an
    # evaluator would never join its collectives
    others = sorted(set(cluster) - set(TF_CONFIG_TASKS))
    if others:
        raise BenchInputError(f"TF_CONFIG names a {others[0]!r} task, but --strategy multiworker "
                              f"(MultiWorkerMirroredStrategy) takes {' and '.join(TF_CONFIG_TASKS)} tasks only. "
                              f"Received: cluster jobs={sorted(cluster)}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise BenchInputError(f"TF_CONFIG task type must be one of {sorted(cluster)}. Received: type={kind!r}")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise BenchInputError(f"TF_CONFIG task index must be an integer in [0, {len(cluster[kind])}). "
                              f"Received: index={index!r}")
    return cluster, task


def _tf_config_or_none() -> tuple[dict, dict] | None:
    """TF_CONFIG's cluster and task, or None where it is missing or malformed."""
    try:
        return _tf_config()
    except ValueError:
        return None


class MultiWorker(TFDistribution):
    """tf.distribute.MultiWorkerMirroredStrategy, configured by TF_CONFIG."""

    name = "multiworker"
    backends = BACKENDS
    options = ("all_reduce", "all_reduce_pack_mb")
    # --all-reduce -> CommunicationImplementation (auto: the strategy's own choice)
    COMMUNICATION = {"ring": "RING", "nccl": "NCCL"}

    @classmethod
    def processes(cls, workers: int) -> int:
        return workers

    @classmethod
    def replicas(cls, workers: int, gpus: int) -> int:
        return workers * max(1, gpus)  # each worker mirrors over the GPUs it sees

    @classmethod
    def launcher(cls, workers: int, timeout: float) -> list[str]:
        return [sys.executable, "-m", "launch.local_cluster", "-n", str(workers), "--timeout", f"{timeout:g}", "--"]

    @classmethod
    def env_rank(cls) -> int:
        # no usable TF_CONFIG: no other rank can claim the chief's row
        cluster, task = _tf_config_or_none() or ({}, {"type": "worker", "index": 0})
        return task["index"] + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)

    @classmethod
    def env_size(cls) -> int:
        cluster, _ = _tf_config_or_none() or ({"worker": [""]}, None)
        return len(cluster.get("chief", [])) + len(cluster.get("worker", []))

    @classmethod
    def env_local_size(cls) -> int:
        found = _tf_config_or_none()
        if found is None:
            return 1
        cluster, task = found
        host = cluster[task["type"]][task["index"]].rsplit(":", 1)[0]
        return sum(h.rsplit(":", 1)[0] == host for hosts in cluster.values() for h in hosts)

    @classmethod
    def check_config(cls, cfg: "RunConfig") -> None:
        super().check_config(cfg)
        _check_all_reduce(cfg, cls.COMMUNICATION, gpu_only=("nccl",))

    @classmethod
    def check_environment(cls) -> None:
        super().check_environment()
        _tf_config()

    @classmethod
    def check_no_launcher(cls) -> None:
        raw = os.environ.get("TF_CONFIG", "")
        if raw.strip():  # even a valid one: each rank gets its own from launch.local_cluster
            from bench.errors import BenchInputError
            raise BenchInputError("TF_CONFIG is set, but a sweep starts each configuration's processes itself "
                                  "(launch.local_cluster gives each multiworker rank its own TF_CONFIG) and every "
                                  f"other child would take it for its cluster; unset TF_CONFIG. Received: TF_CONFIG={raw}")

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> Distribution:
        if cfg.backend == "jax":  # the same TF_CONFIG describes the cluster: its first task coordinates
            from bench.backends.jax import mesh as jax_mesh
            cluster, _ = _tf_config()
            coordinator = [*cluster.get("chief", []), *cluster.get("worker", [])][0]
            return jax_mesh.multiworker(coordinator, cls.env_size(), cls.env_rank(), cfg.collective_timeout)
        return cls(cfg.collective_timeout, cfg.all_reduce, cfg.all_reduce_pack_mb)

    def __init__(self, collective_timeout: float, all_reduce: str = "auto", pack_mb: float | None = None):
        import tensorflow as tf

        cluster, task = _tf_config()
        impl = tf.distribute.experimental.CommunicationImplementation[self.COMMUNICATION.get(all_reduce, "AUTO")]
        # gradients are packed into all-reduces of bytes_per_pack (0: the strategy's own packing)
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout, implementation=impl,
            bytes_per_pack=int(pack_mb * 2**20) if pack_mb else 0)
        workers = [*cluster.get("chief", []), *cluster.get("worker", [])]
        # The strategy waits here, inside TensorFlow's C++, until every task of the cluster has
        # joined, however long that takes, whatever the collective timeout
        with startup_watchdog(collective_timeout, f"error: multiworker start-up: not every task of TF_CONFIG's "
                              f"cluster ({', '.join(workers)}) joined within --collective-timeout "
                              f"{collective_timeout:g} s; {task['type']} {task['index']} gave up"):
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        self.size = len(workers)
        self.rank = task["index"] + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)
        self.local_rank = 0
        self.num_replicas = self.strategy.num_replicas_in_sync

    def shutdown(self) -> None:
        # A last barrier keeps the chief from exiting (and tearing down its gRPC server) while
        # a peer still needs it for a collective.
        self.barrier()


def _first_int(*names: str, default: int) -> int:
    """The first of these environment variables that holds an integer."""
    for var in names:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return default


class Horovod(Distribution):
    """horovod.tensorflow, launched by horovodrun (Gloo on CPU; NCCL/MPI where built).

    Every Horovod call of cnnbench is in this class. Keras 3 breaks
    hvd.DistributedGradientTape and hvd.broadcast_variables, so gradients go through
    hvd.grouped_allreduce and the initial state through one hvd.broadcast per variable."""

    name = "horovod"
    backend_hint = ("Horovod has no JAX binding; use --strategy mirrored (every local device) or "
                    "--strategy multiworker (jax.distributed) instead")
    jit_collectives = False  # Horovod's ops have no XLA kernels in this build
    options = ("hvd_compression", "hvd_fusion_mb", "hvd_cycle_ms", "hvd_hierarchical", "hvd_autotune", "hvd_timeline")

    @classmethod
    def processes(cls, workers: int) -> int:
        return workers

    @classmethod
    def replicas(cls, workers: int, gpus: int) -> int:
        return workers  # one device per rank

    @classmethod
    def launcher(cls, workers: int, timeout: float) -> list[str]:
        hvdrun = Path(sys.executable).with_name("horovodrun")
        return [str(hvdrun) if hvdrun.exists() else "horovodrun", "-np", str(workers),
                "-H", f"localhost:{workers}", "--gloo"]

    # what horovodrun's Gloo launcher sets in every rank (horovod/runner/gloo_run.py): its place in
    # the job, and where the rendezvous server is
    RANK_VARIABLES = ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE",
                      "HOROVOD_CROSS_RANK", "HOROVOD_CROSS_SIZE")
    GLOO_RENDEZVOUS = ("HOROVOD_GLOO_RENDEZVOUS_ADDR", "HOROVOD_GLOO_RENDEZVOUS_PORT")
    MPI_RANK = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")  # Open MPI, MPICH / Intel MPI, PMIx

    @classmethod
    def launched_here(cls) -> bool:
        if "HOROVOD_RANK" in os.environ:  # horovodrun's Gloo launcher sets it in every rank
            return True
        # MPI launcher: an MPI rank whose environment horovodrun filled with HOROVOD_* settings
        return "OMPI_COMM_WORLD_RANK" in os.environ and any(k.startswith("HOROVOD_") for k in os.environ)

    @classmethod
    def check_launcher_environment(cls) -> None:
        # A rank set by hand (no rendezvous server, no MPI job) makes hvd.init() wait for peers
        # that no launcher started, then abort in C++; Horovod's tuning knobs (HOROVOD_CYCLE_TIME, ...)
        # are not a launcher's, and stay allowed.
        stray = [v for v in cls.RANK_VARIABLES if v in os.environ]
        launcher = all(v in os.environ for v in cls.GLOO_RENDEZVOUS) or any(v in os.environ for v in cls.MPI_RANK)
        if stray and not launcher:
            from bench.errors import BenchInputError
            raise BenchInputError(
                f"{stray[0]}={os.environ[stray[0]]} is set, but no Horovod launcher started this process "
                f"(horovodrun sets {cls.GLOO_RENDEZVOUS[0]}, mpirun {cls.MPI_RANK[0]}): unset "
                f"{', '.join(stray)}, or start the ranks with horovodrun")

    @classmethod
    def env_rank(cls) -> int:
        return _first_int("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", default=0)

    @classmethod
    def env_size(cls) -> int:
        return _first_int("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", default=1) if cls.launched_here() else 1

    @classmethod
    def env_local_size(cls) -> int:
        if not cls.launched_here():
            return 1
        return _first_int("HOROVOD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", default=1)

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> "Horovod":
        from bench.measure.traces import AUTOTUNE_LOG

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
            if self.env_rank() == 0:
                Path(autotune_log).parent.mkdir(parents=True, exist_ok=True)
            os.environ.update(HOROVOD_AUTOTUNE="1", HOROVOD_AUTOTUNE_LOG=autotune_log)
        if timeline:  # Horovod: a timeline started and stopped from Python, around the timed steps
            os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"
        import horovod.tensorflow as hvd
        import tensorflow as tf

        if hierarchical:
            # Horovod: hierarchical all-reduce (within each host, then across hosts) exists in its MPI
            # and NCCL operations only; a Gloo-only build would silently run the flat ring instead
            if not (hvd.mpi_built() or hvd.nccl_built()):
                from bench.errors import BenchInputError
                raise BenchInputError("--hvd-hierarchical needs a Horovod built with MPI or NCCL; this one has "
                                      "Gloo only (rebuild it: see README, 'Horovod'). Received: hvd_hierarchical=True")
            os.environ["HOROVOD_HIERARCHICAL_ALLREDUCE"] = "1"
        hvd.init()  # Horovod: initialise
        self.hvd = hvd
        # Horovod: gradients cast to fp16 for the all-reduce and back (Compression.fp16)
        self.compression = hvd.Compression.fp16 if compression == "fp16" else hvd.Compression.none
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
        self.num_replicas = self.size
        gpus = tf.config.list_physical_devices("GPU")
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

    def comm_timeline(self, path: str) -> Any:
        from bench.measure.timing import Tracer

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
