"""Everything one run needs (`Session`), built the same way for bench/run.py and the pytest suite, on either backend: the backend selected and configured, the distribution, the data, then the model, the memory check and the step."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import models
from bench.backends import load, make_distribution
from bench.backends.base import Backend, Step
from bench.backends.distribution import Distribution
from bench.backends.keras_common import apply_precision_policy, make_optimizer
from bench.config.schema import RunConfig
from bench.data.source import DataSource, load_data
from bench.errors import BenchInputError
from bench.measure.memory import Estimate, check, estimate
from bench.measure.probes import Peak, cores_per_replica, host_available, memory_floor, rss_bytes
from bench.measure.timing import Tracer, WaitClock
from bench.measure.traces import (
    AUTOTUNE_LOG,
    TIMELINE_FILE,
    autotune_best,
    read_timeline,
)
from bench.procs import has_gpu
from bench.results.row import Placement, Topology
from bench.runner.validate import require_resolved
from bench.runner.weights import load_initial_weights, save_weights
from launch import emulated_host, get_strategy

if TYPE_CHECKING:
    import keras

log = logging.getLogger("cnnbench")


@dataclasses.dataclass
class Session:
    """Everything one run needs, built the same way for bench/run.py and the pytest suite, on
    either backend (`backend` implements bench.backends.base.Backend). Filled in order:
    open_session, then describe (desc, estimate), build_model (model, memory), then build_step (optimizer,
    step)."""
    cfg: RunConfig                # resolved (bench.runner.validate.prepare)
    dist: Distribution            # the strategy's adapter on this backend
    source: DataSource
    per_replica_batch: int        # --batch-size, resolved
    global_batch: int             # per_replica_batch x replicas: one step's images across the run
    steps_per_epoch: int | None
    gpu_names: list[str]
    backend: Backend
    model: "keras.Model | None" = None
    optimizer: Any = None         # a keras optimizer (None for inference)
    desc: models.ModelDescription | None = None
    step: Step | None = None      # what the backend's build_step returned
    data_wait: WaitClock = dataclasses.field(default_factory=WaitClock)  # the step's waits for real batches
    estimate: Estimate | None = None  # from the layer walk
    memory: Peak | None = None    # what the run really used (host RSS or the device's counter)
    init_weights_sha256: str | None = None  # of --init-weights as it was read, before the run could change it

    @property
    def topology(self) -> Topology:
        return Topology(workers=self.dist.workers, replicas=self.dist.num_replicas,
                        per_replica_batch=self.per_replica_batch, global_batch=self.global_batch)

    @property
    def placement(self) -> Placement:
        return placement(self.cfg.strategy, self.dist, self.gpu_names)

    def build(self) -> "Session":
        """The description, the model, then the backend's step (bench/run.py checks the memory
        estimate before the model's weights exist)."""
        return self.describe().build_model().build_step()

    def _model_args(self) -> dict[str, Any]:
        """What the description and the model are both built from."""
        cfg = self.cfg
        return dict(num_classes=cfg.num_classes, width=cfg.width, input_shape=(cfg.image_size, cfg.image_size, 3),
                    form=cfg.form)

    def describe(self) -> "Session":
        """The model's description (its layers' shapes, no weights drawn) and the memory estimate
        made from it: a run refused for memory is refused before its weights take any."""
        cfg, dist = self.cfg, self.dist
        apply_precision_policy(cfg.precision)
        try:
            self.desc = models.describe(cfg.model, **self._model_args())
        except models.ModelShapeError as e:  # bad input: --image-size too small for the model's form
            raise BenchInputError(f"{e}. Received: image_size={cfg.image_size}, form={cfg.form}") from None
        # a GPU holds one replica; a CPU process holds all of its own
        self.estimate = estimate(self.desc, cfg, self.backend.MEMORY[cfg.mode],
                                 replicas=1 if self.gpu_names else dist.num_replicas // dist.size,
                                 on_gpu=bool(self.gpu_names))
        return self

    def build_model(self) -> "Session":
        """The model (from --init-weights or the seed, in the strategy's scope), described first
        if it was not."""
        import keras

        if self.desc is None:
            self.describe()
        cfg, dist = self.cfg, self.dist
        self.memory = self.backend.memory_probe(dist)  # a CPU's baseline: the RSS before the model exists
        keras.utils.set_random_seed(cfg.seed)  # after describe(), whose layers may draw seeds
        switches = models.step_switches(shifted_maxpool=cfg.jax_maxpool == "shifted",
                                        one_pass_batchnorm=cfg.jax_batchnorm == "onepass")
        with dist.scope(), switches:
            self.model = models.build_model(cfg.model, **self._model_args())
            if cfg.init_weights:
                self.init_weights_sha256 = load_initial_weights(self.model, cfg.init_weights)
        return self

    def check_memory(self) -> None:
        """PredictedOOM (bench.memory) where the estimate exceeds the device's memory, or the
        available RAM shared by this run's processes on this host; --force skips it."""

        if self.cfg.force:
            return
        device = self.backend.device_memory()
        if device is not None:
            check(self.estimate, device, where="GPU memory")
        else:  # the guard's floor stays free: a run that needs it is stopped anyway
            check(self.estimate, host_available(), processes=get_strategy(self.cfg.strategy).env_local_size(),
                  floor=memory_floor(), held=rss_bytes())

    @property
    def trace_dir(self) -> str | None:
        return self.cfg.trace_dir

    def tracer(self) -> Tracer | None:
        """The backend's profiler for --profile-steps, on the chief (None elsewhere, or unasked)."""
        if self.cfg.profile_steps is None or not self.dist.is_chief:
            return None
        Path(self.trace_dir).mkdir(parents=True, exist_ok=True)
        return self.backend.tracer(self.trace_dir)

    def comm_timeline(self) -> Tracer | None:
        """The strategy's communication timeline for --hvd-timeline (a Tracer), or None."""
        if not self.cfg.hvd_timeline:
            return None
        if self.dist.is_chief:  # every rank starts it; the chief's file is the one written
            Path(self.trace_dir).mkdir(parents=True, exist_ok=True)
        return self.dist.comm_timeline(str(Path(self.trace_dir) / TIMELINE_FILE))

    def comm_columns(self, timed_steps: int) -> dict[str, Any]:
        """On the chief, the row's columns read from the timeline and the autotuner's log."""

        if not self.dist.is_chief or self.trace_dir is None:
            return {}
        cols: dict[str, Any] = {}
        if self.cfg.hvd_timeline:
            tl = read_timeline(Path(self.trace_dir) / TIMELINE_FILE, timed_steps)
            cols.update(hvd_negotiate_ms=tl.negotiate_ms, hvd_allreduce_ms=tl.allreduce_ms, hvd_queue_ms=tl.queue_ms)
        if self.cfg.hvd_autotune:
            cols["hvd_autotune_best"] = autotune_best(Path(self.trace_dir) / AUTOTUNE_LOG)
        return cols

    def build_step(self) -> "Session":
        """To train, the optimizer (built in the strategy's scope); then the backend's step:
        initial-state broadcast, compiled step, step callable."""

        if self.cfg.mode == "train":
            with self.dist.scope():
                self.optimizer = make_optimizer(self.cfg, self.backend.sgd(), self.dist.num_replicas,
                                                self.steps_per_epoch)
                # Keras 3 optimizers must be built inside the scope before a custom loop's first step.
                self.optimizer.build(self.model.trainable_variables)
        self.step = self.backend.build_step(self.cfg, self.dist, self.source, self.model, self.optimizer,
                                            global_batch=self.global_batch, data_wait=self.data_wait)
        return self

    def build_input_step(self) -> "Session":
        """--mode input: no description, model or estimate; the memory probe (what the pipeline
        itself holds) and the backend's input step over the same pipelines training reads."""
        self.memory = self.backend.memory_probe(self.dist)
        self.step = self.backend.input_step(self.cfg, self.dist, self.source, data_wait=self.data_wait)
        return self

    def save_weights(self, path: str) -> None:
        """The trained weights as a Keras .weights.h5 file (readable by either backend)."""

        self.step.trainer.write_back()
        save_weights(self.model, path)


def placement(strategy_name: str, dist: Distribution, gpu_names: list[str]) -> Placement:
    """Where a run's (or a collective benchmark's) replicas are: the hosts the job spans (its
    launcher's word), the emulated link this host has (launch.hosts; None on one host, unshaped or
    real), on CPUs the cores each replica had (bench.measure.probes.cores_per_replica), and what
    carries the collectives where the strategy has a choice."""
    strategy = get_strategy(strategy_name)
    hosts = strategy.env_hosts()
    here = emulated_host() if hosts > 1 else None
    cores = None
    if not gpu_names:
        cores = cores_per_replica(max(1, dist.num_replicas // max(1, dist.size)), strategy.env_local_size())
    return Placement(hosts=hosts, link_gbps=here.link_gbps if here is not None else None, cores_per_replica=cores,
                     transport=dist.transport)


def open_session(cfg: RunConfig, source: "DataSource | None" = None) -> Session:
    """Select and configure the backend, build the distribution and load the data (or finish
    `source`, what `read_data` read), for a resolved configuration (bench.runner.validate.prepare).
    Bad input raises BenchInputError here, before anything is built."""

    require_resolved(cfg)
    backend = load(cfg.backend)
    backend.configure(cfg)
    dist = make_distribution(cfg)
    gpu_names = backend.gpu_names()
    if bool(gpu_names) != has_gpu(cfg.backend):  # the defaults were filled for the machine nvidia-smi showed
        log.warning("%s sees %s, but the configuration's defaults were resolved for %s (nvidia-smi, "
                    "CUDA_VISIBLE_DEVICES, JAX_PLATFORMS); --batch-size and --xla/--no-xla set them",
                    cfg.backend, "a GPU" if gpu_names else "no GPU", "no GPU" if gpu_names else "a GPU")
    per_replica_batch = cfg.batch_size
    global_batch = per_replica_batch * dist.num_replicas
    source = load_data(cfg, source)
    steps_per_epoch = None
    if cfg.accuracy_mode:
        steps_per_epoch = source.train_size // global_batch
        if steps_per_epoch < 1:
            raise BenchInputError(f"global batch {global_batch} exceeds the {cfg.data} training split "
                                  f"({source.train_size} images). Received: batch_size={per_replica_batch}")
        if steps_per_epoch * cfg.epochs < 2:  # the first step compiles: nothing would be left to time
            raise BenchInputError(f"one epoch of {cfg.data} is {steps_per_epoch} step at global batch {global_batch} "
                                  f"({source.train_size} images), and its first step compiles: nothing to time. "
                                  f"Received: batch_size={per_replica_batch}, epochs={cfg.epochs}")
    return Session(cfg, dist, source, per_replica_batch, global_batch, steps_per_epoch, gpu_names, backend)
