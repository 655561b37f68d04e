"""Data parallelism on JAX: one mesh with a single batch axis over every device of the run.

The same program serves single, mirrored and multiworker (the adapters of their specs, listed
in bench.backends.jax.backend.ADAPTERS): parameters and optimizer state are
replicated over the mesh, each batch is sharded along its first axis, and XLA inserts the
gradient all-reduce inside the jitted step. The program keeps single-device meaning, so
BatchNorm's batch statistics are those of the global batch (synchronised BatchNorm), unlike
tf.distribute and Horovod, which keep them per replica.

Imported only under --backend jax: nothing here imports TensorFlow or Horovod.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from bench.backends.distribution import MeshDistribution, startup_watchdog
from launch.strategies import MultiWorker, in_slurm_step, slurm_task_gpus, tf_config

if TYPE_CHECKING:
    from bench.config.schema import RunConfig

BATCH_AXIS = "batch"
STARTUP_MARGIN_S = 30


def force_host_devices(n: int) -> None:
    """Split the host into n XLA devices. Must run before JAX starts its CPU backend; on a
    machine with accelerators the host devices are not used for the model."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={n}"])


class JaxMesh(MeshDistribution):
    """The adapter for every strategy under --backend jax (see the module docstring)."""

    def __init__(self, name: str, devices: Sequence[Any], *, rank: int = 0, size: int = 1):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        self.name = name
        self.rank, self.size = rank, size
        self.mesh, self.batch_axis = Mesh(np.asarray(devices), (BATCH_AXIS,)), BATCH_AXIS
        self.num_replicas = len(devices)
        self.local_devices = [d for d in devices if d.process_index == jax.process_index()]
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharded = NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))

    def shard(self, local_batch: Sequence[np.ndarray]) -> tuple:
        """This process's part of a global batch (its replicas' shards, in device order) as
        global arrays sharded along the batch axis."""
        import jax

        if self.size == 1:
            return tuple(jax.device_put(x, self.batch_sharded) for x in local_batch)
        return tuple(jax.make_array_from_process_local_data(self.batch_sharded, x) for x in local_batch)

    def replicate(self, tree: Any) -> Any:
        """A pytree of host values replicated on every device; with several processes, process
        0's values (a real broadcast, so every replica starts from rank 0's state)."""
        import jax

        if self.size > 1:
            from jax.experimental import multihost_utils
            tree = multihost_utils.broadcast_one_to_all(tree)
        return jax.device_put(tree, self.replicated)

    def gather(self, values: Sequence[float]) -> np.ndarray:
        local = np.asarray(values, dtype=np.float64)[None, :]
        if self.size == 1:
            return local
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(local)).reshape(self.size, -1)

    def allreduce_op(self, elements: int, dtype: str) -> Callable[[], None]:
        import jax
        import jax.numpy as jnp
        from jax.sharding import PartitionSpec

        kind = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}[dtype]
        local = np.ones((len(self.local_devices) * elements,), dtype=np.float32)
        message = self.shard([local.astype(kind)])[0]  # `elements` values on each device
        spec = PartitionSpec(self.batch_axis)
        # JAX: psum over the mesh's one axis, inside shard_map: one all-reduce per call, in XLA
        allreduce = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x, self.batch_axis), mesh=self.mesh,
                                          in_specs=spec, out_specs=spec))

        def op() -> None:
            allreduce(message).block_until_ready()
        return op

    def barrier(self) -> None:
        if self.size > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("cnnbench barrier")

    def shutdown(self) -> None:
        if self.size > 1:
            import jax
            self.barrier()
            jax.distributed.shutdown()


def single(cfg: "RunConfig") -> JaxMesh:
    import jax
    return JaxMesh("single", jax.local_devices()[:1])


def mirrored(cfg: "RunConfig") -> JaxMesh:
    """Every local accelerator, or cfg.cpu_replicas host devices on a CPU-only machine."""
    force_host_devices(cfg.cpu_replicas)
    import jax
    return JaxMesh("mirrored", jax.local_devices())


def multiworker(cfg: "RunConfig") -> JaxMesh:
    """Several processes joined by jax.distributed, one mesh over all their devices. The same
    TF_CONFIG as TensorFlow's describes the cluster: its first task coordinates. Where there is
    none, the Slurm job step srun started this process in does: JAX's own Slurm detection puts the
    coordinator on the step's first node, at a port its job id picks."""
    import jax

    num_processes, process_id, timeout_s = MultiWorker.env_size(), MultiWorker.env_rank(), cfg.collective_timeout
    if in_slurm_step():
        coordinator, detect, where = None, "slurm", (f"the coordinator on the first node of the Slurm step "
                                                       f"({os.environ.get('SLURM_STEP_NODELIST', '')})")
        # every GPU Slurm gave this task (JAX's detection would give each process one, by SLURM_LOCALID)
        gpus = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        local_ids = slurm_task_gpus(len(gpus)) or None
    else:
        cluster, _ = tf_config()
        coordinator = [*cluster.get("chief", []), *cluster.get("worker", [])][0]
        detect, where, local_ids = "deactivate", f"the coordinator at {coordinator}", None
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    # JAX's own timeout should end a start-up whose peers never come, with an error the run turns
    # into a row; the watchdog, a little later, ends one that blocks past it anyway
    with startup_watchdog(max(1, int(timeout_s)) + STARTUP_MARGIN_S,
                          f"error: multiworker start-up: not every one of the {num_processes} processes joined "
                          f"{where} within --collective-timeout {timeout_s:g} s; process {process_id} gave up"):
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_ids,
                                   cluster_detection_method=detect, initialization_timeout=max(1, int(timeout_s)))
    return JaxMesh("multiworker", jax.devices(), rank=jax.process_index(), size=jax.process_count())
