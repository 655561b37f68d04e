"""The strategy specs: single device, tf.distribute's (mirrored, multiworker) and Horovod's.
See launch.base for the contract. Nothing here imports a framework or the harness: each
backend's adapters (bench.backends.tensorflow.distribute, bench.backends.jax.mesh) build them."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from bench.errors import BenchInputError
from bench.procs import gpu_count

from .base import BACKENDS, MAX_PER_CORE, Launch, Strategy, StrategyConfig


class Single(Strategy):
    """One device in one process."""

    name = "single"
    backends = BACKENDS
    scalable = False


class Mirrored(Strategy):
    """tf.distribute.MirroredStrategy over the GPUs, or over N logical CPU devices; on JAX, one
    process data-parallel over a mesh of the local devices."""

    name = "mirrored"
    backends = ("tensorflow", "jax")  # named: a new backend claims it with its adapter
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
    def check_config(cls, cfg: "StrategyConfig") -> None:
        super().check_config(cfg)
        # Each logical CPU device holds a model replica and its own traced step (launch.base.MAX_PER_CORE).
        cap = MAX_PER_CORE * (os.cpu_count() or 1)
        if cfg.cpu_replicas > cap:
            raise BenchInputError(f"cpu_replicas must be <= {cap} ({MAX_PER_CORE} per core on this "
                                  f"{os.cpu_count()}-core machine). Received: cpu_replicas={cfg.cpu_replicas}")
        _check_all_reduce(cfg, cls.CROSS_DEVICE_OPS, gpu_only=("nccl", "hierarchical"))


def _check_all_reduce(cfg: "StrategyConfig", choices: dict, gpu_only: tuple[str, ...]) -> None:
    """BenchInputError for an --all-reduce this strategy has no implementation of, or one that
    needs GPUs on a machine without them."""
    if cfg.all_reduce != "auto" and cfg.all_reduce not in choices:
        raise BenchInputError(f"--strategy {cfg.strategy} has no {cfg.all_reduce} all-reduce; valid: auto, "
                              f"{', '.join(choices)}. Received: all_reduce={cfg.all_reduce}")
    if cfg.all_reduce in gpu_only and gpu_count() == 0:
        raise BenchInputError(f"--all-reduce {cfg.all_reduce} needs GPUs, and this machine has none. "
                              f"Received: all_reduce={cfg.all_reduce}")


TF_CONFIG_TASKS = ("chief", "worker")


def tf_config() -> tuple[dict, dict]:
    """TF_CONFIG's cluster and task, checked; BenchInputError naming what is wrong."""

    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise BenchInputError("--strategy multiworker needs TF_CONFIG with 'cluster' and 'task' "
                              "(use `python -m launch.local_cluster -n N -- ...` on one machine)")
    try:
        parsed = json.loads(raw)
    except ValueError as e:
        raise BenchInputError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster, task = (parsed.get("cluster"), parsed.get("task")) if isinstance(parsed, dict) else (None, None)
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
        return tf_config()
    except ValueError:
        return None


# What srun sets in every task of a job step (srun(1), "OUTPUT ENVIRONMENT VARIABLES"). A batch
# script has SLURM_PROCID and SLURM_NTASKS too, but no SLURM_STEP_NUM_TASKS: it is not a step.
SLURM_STEP = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS")


def slurm_tasks_per_node() -> list[int]:
    """The tasks on each node of this job step, in node order: Slurm's compressed list, e.g.
    '2(x3),1' -> [2, 2, 2, 1] (SLURM_STEP_TASKS_PER_NODE, else the job's); [] where absent."""
    raw = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE") or ""
    counts: list[int] = []
    for part in filter(None, raw.split(",")):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m is None:
            return []
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def in_slurm_step() -> bool:
    """Whether srun started this process as one task of a job step of more than one task, with no
    TF_CONFIG (which, where set, says what the cluster is: e.g. launch.local_cluster inside a job)."""
    return (not os.environ.get("TF_CONFIG", "").strip() and all(v in os.environ for v in SLURM_STEP)
            and _first_int("SLURM_STEP_NUM_TASKS", default=1) > 1)


def slurm_task_gpus(visible: int) -> list[int]:
    """Which of the `visible` GPUs this task of a Slurm step uses: all of them where Slurm gave each
    task its own (--gpus-per-task, or one task per node), else an even share by SLURM_LOCALID of
    the GPUs every task on the node sees (--gpus-per-node N with several tasks per node)."""
    if visible <= 0:
        return []
    on_node = _first_int("SLURM_GPUS_ON_NODE", default=visible)
    local = MultiWorker.env_local_size()
    if visible < on_node or local <= 1:  # this task's own GPUs
        return list(range(visible))
    per = max(1, visible // local)
    first = (_first_int("SLURM_LOCALID", default=0) * per) % visible
    return list(range(first, min(visible, first + per)))


class MultiWorker(Strategy):
    """One process per worker (tf.distribute.MultiWorkerMirroredStrategy; on JAX, jax.distributed),
    its cluster described by TF_CONFIG, or, where there is none, by the Slurm job step that srun
    started it in (TensorFlow's SlurmClusterResolver; JAX's Slurm cluster detection)."""

    name = "multiworker"
    backends = ("tensorflow", "jax")  # named: a new backend claims it with its adapter
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
        if in_slurm_step():
            return _first_int("SLURM_PROCID", default=0)
        # no usable TF_CONFIG: no other rank can claim the chief's row
        cluster, task = _tf_config_or_none() or ({}, {"type": "worker", "index": 0})
        return task["index"] + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)

    @classmethod
    def env_size(cls) -> int:
        if in_slurm_step():
            return _first_int("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", default=1)
        cluster, _ = _tf_config_or_none() or ({"worker": [""]}, None)
        return len(cluster.get("chief", [])) + len(cluster.get("worker", []))

    @classmethod
    def env_local_size(cls) -> int:
        if in_slurm_step():
            per_node, node = slurm_tasks_per_node(), _first_int("SLURM_NODEID", default=0)
            if 0 <= node < len(per_node):
                return per_node[node]
            return _first_int("SLURM_NTASKS_PER_NODE", default=max(per_node or [1]))
        found = _tf_config_or_none()
        if found is None:
            return 1
        cluster, task = found
        host = cluster[task["type"]][task["index"]].rsplit(":", 1)[0]
        return sum(h.rsplit(":", 1)[0] == host for hosts in cluster.values() for h in hosts)

    @classmethod
    def env_hosts(cls) -> int:
        if in_slurm_step():
            return _first_int("SLURM_STEP_NUM_NODES", "SLURM_NNODES", default=1)
        found = _tf_config_or_none()
        if found is None:
            return 1
        return len({h.rsplit(":", 1)[0] for hosts in found[0].values() for h in hosts})

    @classmethod
    def check_config(cls, cfg: "StrategyConfig") -> None:
        super().check_config(cfg)
        _check_all_reduce(cfg, cls.COMMUNICATION, gpu_only=("nccl",))

    @classmethod
    def check_environment(cls) -> None:
        if not in_slurm_step():
            if "SLURM_PROCID" in os.environ and not os.environ.get("TF_CONFIG", "").strip():
                raise BenchInputError(f"--strategy multiworker under Slurm needs a job step of more than one task "
                                      f"(`srun -n N ...`, one per worker); this is a step of "
                                      f"{os.environ.get('SLURM_STEP_NUM_TASKS', 'no')} task(s) and has no TF_CONFIG")
            tf_config()
            return
        rank, size = cls.env_rank(), cls.env_size()
        if not 0 <= rank < size or not os.environ.get("SLURM_STEP_NODELIST", "").strip():
            raise BenchInputError(f"the Slurm step's variables do not describe one of its tasks: SLURM_PROCID={rank}, "
                                  f"SLURM_STEP_NUM_TASKS={size}, SLURM_STEP_NODELIST="
                                  f"{os.environ.get('SLURM_STEP_NODELIST', '')!r}; start the ranks with srun")

    @classmethod
    def check_no_launcher(cls) -> None:
        raw = os.environ.get("TF_CONFIG", "")
        if raw.strip():  # even a valid one: each rank gets its own from launch.local_cluster
            raise BenchInputError("TF_CONFIG is set, but a sweep starts each configuration's processes itself "
                                  "(launch.local_cluster gives each multiworker rank its own TF_CONFIG) and every "
                                  f"other child would take it for its cluster; unset TF_CONFIG. Received: TF_CONFIG={raw}")
        super().check_no_launcher()  # one task of a Slurm step of several: each would sweep


def _first_int(*names: str, default: int) -> int:
    """The first of these environment variables that holds an integer."""
    for var in names:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return default


class Horovod(Strategy):
    """Horovod, launched by horovodrun (Gloo, or MPI with --mpi) or by Open MPI's mpirun: one device per
    rank. Its adapter, with every Horovod call of cnnbench, is TensorFlow's
    (bench.backends.tensorflow.distribute.Horovod): Horovod has no JAX binding."""

    name = "horovod"
    backend_hint = {"jax": "Horovod has no JAX binding; use --strategy mirrored (every local device) or "
                           "--strategy multiworker (jax.distributed) instead"}
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
    # what Open MPI's mpirun (and horovodrun --mpi, which runs it) sets in every rank: its place in the job
    OMPI_WORLD = ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                  "OMPI_COMM_WORLD_LOCAL_SIZE")
    # what only a real MPI launcher sets: how a rank reaches it (Open MPI 4's ORTE daemon, PMIx in Open
    # MPI 4 and 5, MPICH's Hydra); MPI_Init of a rank without one starts a job of its own, of size 1
    MPI_LAUNCHER = ("OMPI_MCA_orte_hnp_uri", "PMIX_NAMESPACE", "PMI_FD", "PMI_PORT")

    @classmethod
    def mpi_launched(cls) -> bool:
        """Whether an MPI launcher (mpirun, horovodrun --mpi) started this process."""
        return any(v in os.environ for v in cls.MPI_LAUNCHER)

    @classmethod
    def launched_here(cls) -> bool:
        if "HOROVOD_RANK" in os.environ:  # horovodrun's Gloo launcher sets it in every rank
            return True
        if "OMPI_COMM_WORLD_RANK" not in os.environ:
            return False
        # An Open MPI job: of several ranks (`mpirun -np 2 python bench/run.py`: Horovod is the one strategy
        # whose ranks MPI starts), or one of one rank given HOROVOD_* settings (horovodrun --mpi passes on
        # those it is given). A bare `mpirun -np 1` stays single. Variables set by hand are refused by
        # check_launcher_environment.
        return _first_int("OMPI_COMM_WORLD_SIZE", default=1) > 1 or any(k.startswith("HOROVOD_") for k in os.environ)

    @classmethod
    def check_launcher_environment(cls) -> None:
        # A rank set by hand (no rendezvous server, no MPI job) makes hvd.init() wait for peers
        # that no launcher started, then abort in C++, or start an MPI job of one that the row would
        # count as several; Horovod's tuning knobs (HOROVOD_CYCLE_TIME, ...) are not a launcher's, and
        # stay allowed.
        stray = [v for v in (*cls.RANK_VARIABLES, *cls.OMPI_WORLD) if v in os.environ]
        launcher = all(v in os.environ for v in cls.GLOO_RENDEZVOUS) or cls.mpi_launched()
        if stray and not launcher:
            raise BenchInputError(
                f"{stray[0]}={os.environ[stray[0]]} is set, but no Horovod launcher started this process "
                f"(horovodrun sets {cls.GLOO_RENDEZVOUS[0]}, mpirun {cls.MPI_LAUNCHER[1]}): unset "
                f"{', '.join(stray)}, or start the ranks with horovodrun or mpirun")

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
    def env_hosts(cls) -> int:
        # horovodrun's Gloo launcher says it outright; under mpirun, ranks over ranks per host
        return _first_int("HOROVOD_CROSS_SIZE", default=0) or super().env_hosts() if cls.launched_here() else 1
