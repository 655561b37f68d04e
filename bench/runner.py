"""One benchmark run, end to end: distribution -> model -> data -> timed steps -> result row."""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .config import NATURAL_CLASSES, RunConfig
from .errors import BenchInputError
from .memory import PredictedOOM, process_peak_bytes
from .results import AccuracyResult, Outcome, Topology, build_row
from .timing import NonFiniteLoss, Timing, WaitClock, run_steps
from .traces import AUTOTUNE_LOG, TIMELINE_FILE

if TYPE_CHECKING:
    from .data import DataSource

log = logging.getLogger("cnnbench")


@dataclasses.dataclass
class RunOutcome:
    row: dict[str, Any]
    is_chief: bool
    exit_code: int


def _progress(enabled: bool) -> Callable[[str, int], Iterator[int]]:
    def bar(desc: str, n: int):
        if not enabled or n == 0:
            return range(n)
        from tqdm import tqdm
        return tqdm(range(n), desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
    return bar


@dataclasses.dataclass
class Session:
    """Everything one run needs, built the same way for bench/run.py and the pytest suite, on
    either backend (`backend` is its module: bench.backend_tensorflow or bench.backend_jax)."""
    cfg: RunConfig                # resolved
    dist: Any
    source: Any
    global_batch: int
    steps_per_epoch: int | None
    gpu_names: list[str]
    backend: Any
    model: Any = None
    optimizer: Any = None
    trainer: Any = None
    desc: Any = None
    step: Callable[[], tuple] | None = None
    device_sync: Callable[[], None] | None = None
    pipelined: bool = False       # keep one timed step in flight (bench.timing.run_steps)
    data_wait: WaitClock = dataclasses.field(default_factory=WaitClock)  # the step's waits for real batches
    estimate: Any = None          # bench.memory.Estimate, from the layer walk
    memory: Any = None            # bench.memory.HostPeak or DevicePeak: what the run really used
    init_weights_sha256: str | None = None  # of --init-weights as it was read, before the run could change it

    @property
    def topology(self) -> Topology:
        return Topology(workers=self.dist.workers, replicas=self.dist.num_replicas,
                        per_replica_batch=self.cfg.batch_size, global_batch=self.global_batch)

    def build(self) -> "Session":
        """The model, then the backend's step (bench/run.py checks the memory estimate between
        the two)."""
        return self.build_model().build_step()

    def build_model(self) -> "Session":
        """The model (from --init-weights or the seed, in the strategy's scope), its description
        and its memory estimate."""
        import keras

        import models

        from .memory import estimate
        from .train import apply_precision_policy
        from .weights import load_initial_weights

        cfg, dist = self.cfg, self.dist
        self.memory = self.backend.memory_probe(self)  # a CPU's baseline: the RSS before the model exists
        apply_precision_policy(cfg.precision)
        keras.utils.set_random_seed(cfg.seed)
        with dist.scope():
            try:
                self.model = models.build_model(cfg.model, num_classes=cfg.num_classes, width=cfg.width,
                                                input_shape=(cfg.image_size, cfg.image_size, 3), form=cfg.form)
            except models.ModelShapeError as e:  # bad input: --image-size too small for the model's form
                raise BenchInputError(f"{e}. Received: image_size={cfg.image_size}, form={cfg.form}") from None
            if cfg.init_weights:
                self.init_weights_sha256 = load_initial_weights(self.model, cfg.init_weights)
        self.desc = models.describe_model(self.model, name=cfg.model, width=cfg.width)
        # a GPU holds one replica; a CPU process holds all of its own
        self.estimate = estimate(self.desc, cfg, replicas=1 if self.gpu_names else dist.num_replicas // dist.size,
                                 on_gpu=bool(self.gpu_names))
        return self

    def check_memory(self) -> None:
        """PredictedOOM (bench.memory) where the estimate exceeds the device's memory, or the
        available RAM shared by this run's processes on this host; --force skips it."""
        from launch import get_strategy

        from .memory import check, host_available, memory_floor, rss_bytes

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

    def tracer(self) -> Any:
        """The backend's profiler for --profile-steps, on the chief (None elsewhere, or unasked)."""
        if self.cfg.profile_steps is None or not self.dist.is_chief:
            return None
        Path(self.trace_dir).mkdir(parents=True, exist_ok=True)
        return self.backend.tracer(self.trace_dir)

    def comm_timeline(self) -> Any:
        """The strategy's communication timeline for --hvd-timeline (a Tracer), or None."""
        if not self.cfg.hvd_timeline:
            return None
        if self.dist.is_chief:  # every rank starts it; the chief's file is the one written
            Path(self.trace_dir).mkdir(parents=True, exist_ok=True)
        return self.dist.comm_timeline(str(Path(self.trace_dir) / TIMELINE_FILE))

    def comm_columns(self, timed_steps: int) -> dict[str, Any]:
        """On the chief, the row's columns read from the timeline and the autotuner's log."""
        from .traces import autotune_best, read_timeline

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
        from .train import make_optimizer

        if self.cfg.mode == "train":
            with self.dist.scope():
                self.optimizer = make_optimizer(self.cfg, self.dist.num_replicas, self.steps_per_epoch)
                # Keras 3 optimizers must be built inside the scope before a custom loop's first step.
                self.optimizer.build(self.model.trainable_variables)
        self.backend.build_step(self)
        return self

    def save_weights(self, path: str) -> None:
        """The trained weights as a Keras .weights.h5 file (readable by either backend)."""
        from .weights import save_weights

        self.backend.finish(self)
        save_weights(self.model, path)


def open_session(cfg: RunConfig, source: "DataSource | None" = None) -> Session:
    """Select and configure the backend, build the distribution, resolve the config and load
    the data (or finish `source`, what `read_data` read). Bad input raises BenchInputError
    here, before anything is built."""
    from launch import make_distribution

    from .backends import load
    from .data import load_data

    backend = load(cfg.backend)
    backend.configure(cfg)
    dist = make_distribution(cfg)
    gpu_names = backend.gpu_names()
    cfg = cfg.resolved(has_gpu=bool(gpu_names))
    global_batch = cfg.batch_size * dist.num_replicas
    source = load_data(cfg, source)
    steps_per_epoch = None
    if cfg.accuracy_mode:
        steps_per_epoch = source.train_size // global_batch
        if steps_per_epoch < 1:
            raise BenchInputError(f"global batch {global_batch} exceeds the {cfg.data} training split "
                                  f"({source.train_size} images). Received: batch_size={cfg.batch_size}")
    return Session(cfg, dist, source, global_batch, steps_per_epoch, gpu_names, backend)


@dataclasses.dataclass
class _Progress:
    """How far a run has got, for the memory guard's row: its configuration, and its session once open."""
    cfg: RunConfig
    started: float
    session: Session | None = None


def execute(cfg: RunConfig, *, guard: bool = True) -> RunOutcome:
    """Run one benchmark. Bad input raises BenchInputError before any row exists; every other
    failure becomes a row with status diverged/oom/failed (exit code 1), on the chief, wherever
    one can still be written: a start-up failure too. With `guard` (the default: every run
    process has one) a watcher ends the process with an `oom` row, exit 1, when the host's
    available memory falls below the guard's floor (bench.memory.MemoryGuard)."""
    from .memory import MemoryGuard, memory_floor

    progress = _Progress(cfg, time.perf_counter())
    watcher = MemoryGuard(memory_floor(), lambda message: _memory_breach(progress, message)).start() if guard else None
    try:
        return _execute(cfg, progress)
    finally:
        if watcher is not None:
            watcher.stop()


def _memory_breach(progress: _Progress, message: str) -> None:
    """The guard's end of a run, from its own thread while the main one may be stuck inside a
    framework op: the chief appends an `oom` row (the same builder and store as any run's),
    then the process ends with exit 1 at once, as the kernel would have ended it, but recorded."""
    import os

    from launch import get_strategy

    from .hardware import gpu_count
    from .results import append_row

    session = progress.session
    try:
        chief = session.dist.is_chief if session is not None else get_strategy(progress.cfg.strategy).env_rank() == 0
        if chief:
            cfg = session.cfg if session is not None else progress.cfg.resolved(has_gpu=gpu_count() > 0)
            row = build_row(cfg, Outcome("oom", message), session=session,
                            wall_s=time.perf_counter() - progress.started)
            row["process_peak_mem_bytes"] = process_peak_bytes()
            append_row(cfg.output, row)
            print(summary_text(row, cfg.output), flush=True)
        else:
            print(f"error: this rank stopped: {message}", file=sys.stderr, flush=True)
    except BaseException as e:  # noqa: BLE001 - the process must end all the same
        print(f"error: {message}; its row could not be written: {_one_line(e)}", file=sys.stderr, flush=True)
    finally:
        sys.stderr.flush()
        os._exit(1)


def _execute(cfg: RunConfig, progress_state: _Progress) -> RunOutcome:
    from launch import get_strategy

    from .data import read_data

    get_strategy(cfg.strategy).check_environment()
    if cfg.trace_dir is not None and cfg.run_id is None:  # the trace's folder is named by the row's id
        from .results import new_run_id
        cfg = dataclasses.replace(cfg, run_id=new_run_id())
    progress_state.cfg = cfg
    started = time.perf_counter()
    # bad data is input: found with numpy before TensorFlow starts (and prints its start-up lines)
    source = read_data(dataclasses.replace(cfg, num_classes=cfg.num_classes or NATURAL_CLASSES[cfg.data]))
    try:
        session = open_session(cfg, source)
    except BenchInputError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. Horovod or the cluster failing to start
        log.exception("start-up failed")
        return _startup_failure(cfg, e, time.perf_counter() - started)
    progress_state.session = session

    cfg, dist = session.cfg, session.dist
    progress = _progress(cfg.progress and dist.is_chief)
    timing = accuracy = None
    ran_all = False  # every rank ran every step: the row gathers its timing
    try:
        session.build_model()
        session.check_memory()
        session.build_step()
        if cfg.accuracy_mode:
            timing, accuracy = _train_epochs(session, progress, started)
        else:
            timeline = session.comm_timeline()

            def before_timed() -> None:
                session.memory.reset()
                if timeline is not None:
                    timeline.start()

            timing = run_steps(session.step, warmup=cfg.warmup_steps, timed=cfg.steps,
                               global_batch=session.global_batch, progress=progress,
                               device_sync=session.device_sync, before_timed=before_timed,
                               after_timed=timeline.stop if timeline is not None else None,
                               data_wait=None if session.source.fixed else session.data_wait,
                               profile=cfg.profile_range, tracer=session.tracer(), pipelined=session.pipelined,
                               keep_diverged=cfg.mode == "train")
            timing.comm = session.comm_columns(cfg.steps)
        timing.peak_mem_bytes, timing.mem_source = session.memory.peak(), session.memory.label
        timing.process_peak_mem_bytes = process_peak_bytes()
        ran_all = True
        outcome = Outcome("ok")
        if timing.diverged is not None:  # a throughput run timed every step anyway: its row keeps them
            outcome = Outcome("diverged", f"{timing.diverged}; every step was run and timed")
        if cfg.save_weights and dist.is_chief:
            outcome = _save_weights(session, outcome)
    except NonFiniteLoss as e:
        outcome = Outcome("diverged", str(e))
    except PredictedOOM as e:
        if cfg.source != "sweep":  # bench/run.py: bad input, exit 2; a sweep keeps a row of it
            raise
        outcome = Outcome("oom_predicted", str(e))
    except BenchInputError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure becomes a row, never a silent one
        if session.backend.is_oom(e):
            outcome = Outcome("oom", _one_line(e))
        else:
            log.exception("run failed")
            outcome = Outcome("failed", _one_line(e))
    ok = outcome.status == "ok"
    finished = ran_all
    # after a failure a peer may be gone: gathering its timings would only wait for it
    row = build_row(cfg, outcome, session=session, timing=timing if finished else None, accuracy=accuracy,
                    wall_s=time.perf_counter() - started)
    if row.get("process_peak_mem_bytes") is None:  # a failed run: this process's own, no gathering
        row["process_peak_mem_bytes"] = process_peak_bytes()
    if finished:  # likewise a closing barrier
        dist.shutdown()
    return RunOutcome(row, dist.is_chief, 0 if ok else 1)


def _save_weights(session: Session, outcome: Outcome) -> Outcome:
    """--save-weights once every step has run; a failure to write (a full disk) fails the row but
    keeps its timing."""
    path = session.cfg.save_weights
    try:
        session.save_weights(path)
    except Exception as e:  # noqa: BLE001 - the path was checked before the run: what is left is the disk
        log.error("could not save the weights to %s: %s", path, _one_line(e))
        return Outcome("failed", f"could not save the weights to {path}: {_one_line(e)}")
    return outcome


def _startup_failure(cfg: RunConfig, error: BaseException, wall_s: float) -> RunOutcome:
    """The row of a run whose strategy or devices failed to start; only the would-be chief keeps it."""
    from launch import get_strategy

    from .hardware import gpu_count

    row = build_row(cfg.resolved(has_gpu=gpu_count() > 0), Outcome("failed", _one_line(error)), wall_s=wall_s)
    return RunOutcome(row, get_strategy(cfg.strategy).env_rank() == 0, 1)


_NOISE = ("Graph execution error", "Detected at node", "File ", "[[{{node", "^")


def _one_line(e: BaseException) -> str:
    """The exception's most telling line (TensorFlow wraps the cause in a graph traceback)."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    useful = [l for l in lines if not l.startswith(_NOISE)]
    return f"{type(e).__name__}: {(useful or lines or [''])[0]}"[:500]


def _train_epochs(session: Session, progress, started: float) -> tuple[Timing, AccuracyResult]:
    """Accuracy mode: whole epochs, test-split evaluation after each, stop at the target."""
    s = session
    cfg, step, trainer, dist = s.cfg, s.step, s.trainer, s.dist
    steps_per_epoch, global_batch, device_sync = s.steps_per_epoch, s.global_batch, s.device_sync
    timing = Timing()
    result = AccuracyResult(target_reached=False if cfg.target_accuracy else None)
    test_batch = max(global_batch, 256)
    warmup = min(cfg.warmup_steps, steps_per_epoch - 1)
    for epoch in progress("epochs", cfg.epochs):
        first = epoch == 0
        run_steps(step, warmup=warmup if first else 0,
                  timed=steps_per_epoch - (1 + warmup if first else 0), global_batch=global_batch,
                  timing=timing, first_is_compile=first, device_sync=device_sync,
                  before_timed=s.memory.reset if first else None, data_wait=s.data_wait, pipelined=s.pipelined)
        # every rank evaluates its own weights on the whole test split; metrics are averaged
        top1, top5 = dist.gather(trainer.evaluate(s.backend.test_batches(s, test_batch))).mean(axis=0)
        result.top1, result.top5, result.epochs_run = float(top1), float(top5), epoch + 1
        result.top1_by_epoch.append(float(top1))
        result.epoch_end_s.append(time.perf_counter() - started)
        log.info("epoch %d: test top-1 %.4f top-5 %.4f", epoch + 1, top1, top5)
        if cfg.target_accuracy and top1 >= cfg.target_accuracy:
            result.target_reached, result.time_to_target_s = True, time.perf_counter() - started
            break
    return timing, result


def summary_text(row: dict, output: str) -> str:
    """A short human summary of the row just written."""
    if row.get("status") != "ok":
        head = f"{row['model']}: status {row.get('status')}: {row.get('error')}"
        if row.get("images_per_sec_median") is None:
            return head
        return (f"{head}\n  images/sec  {row['images_per_sec_median']:.1f} median (95% CI "
                f"{row['images_per_sec_median_ci95_low']:.1f}-{row['images_per_sec_median_ci95_high']:.1f}) over "
                f"{row['timed_steps']} timed steps, flagged: the loss went non-finite")
    ms = lambda k: 1000 * row[k]  # noqa: E731
    mib = lambda k: f"{row[k] / 2**20:,.0f} MiB" if row.get(k) is not None else "n/a"  # noqa: E731
    loss = f"final loss {row['final_loss']:.4f}" if row.get("final_loss") is not None else "forward only"
    lines = [
        f"{row['model']} | {row['mode']} | {row['strategy']} | {row['workers']} worker(s), {row['replicas']} replica(s) | "
        f"batch {row['per_replica_batch']}x{row['replicas']}={row['global_batch']} | {row['data']} | "
        f"{row['precision']}{' xla' if row['xla'] else ''} | width {row['width']:g}",
        f"  images/sec  {row['images_per_sec_median']:.1f} median (95% CI {row['images_per_sec_median_ci95_low']:.1f}-"
        f"{row['images_per_sec_median_ci95_high']:.1f}), {row['images_per_sec']:.1f} mean (95% CI "
        f"{row['images_per_sec_ci95_low']:.1f}-{row['images_per_sec_ci95_high']:.1f}), jitter "
        f"{row['images_per_sec_jitter']:.1f}, {row['images_per_sec_per_replica']:.1f} per replica",
        f"  step time   {ms('step_time_mean_s'):.1f} ms mean, {ms('step_time_median_s'):.1f} median, "
        f"{ms('step_time_p90_s'):.1f} p90, {ms('step_time_min_s'):.1f} min, std {ms('step_time_std_s'):.1f}"
        f" over {row['timed_steps']} timed steps"
        + (f"; {row['data_wait_ms']:.2f} ms of each waiting for input" if row.get("data_wait_ms") is not None else ""),
        f"  latency     p50 {row['latency_p50_ms']:.2f} ms, p90 {row['latency_p90_ms']:.2f}, p95 "
        f"{row['latency_p95_ms']:.2f}, p99 {row['latency_p99_ms']:.2f} per batch; "
        f"{row['latency_per_image_ms']:.3f} ms per image (p50)",
        f"  memory      peak {mib('peak_mem_bytes')} over the timed steps ({row.get('mem_source') or 'not measured'}), "
        f"process peak {mib('process_peak_mem_bytes')}, estimate {mib('mem_estimate_bytes')} (of the process)",
        f"  compile     {row['compile_s']:.2f} s    TFLOP/s {row['tflops']:.3f}    "
        f"params {row['params']:,}    GFLOPs/img {row['gflops_per_image']:.3f}    {loss}",
    ]
    trace = row.get("trace_dir")
    if row.get("profile_steps"):
        lines.append(f"  profiled    timed steps {row['profile_steps']} (left out of the statistics); trace in {trace} "
                     f"(tensorboard --logdir {trace}; its top ops: python -m bench.traces {trace})")
    if row.get("hvd_allreduce_ms") is not None:
        lines.append(f"  timeline    per step: negotiating {row['hvd_negotiate_ms']:.2f} ms, all-reducing "
                     f"{row['hvd_allreduce_ms']:.2f} ms, queued {row['hvd_queue_ms']:.2f} ms (the timeline "
                     f"in {trace}, chrome://tracing)")
    if row.get("hvd_autotune_best"):
        lines.append(f"  autotune    best: {row['hvd_autotune_best']} (log in {trace})")
    if not row.get("gradient_sync", True):
        lines.append("  diagnostic  --no-gradient-sync: every replica stepped on its own gradients; "
                     "not a training result")
    if row.get("top1") is not None:
        ttt = row.get("time_to_target_s")
        lines.append(f"  accuracy    top-1 {row['top1']:.4f}, top-5 {row['top5']:.4f} after {row['epochs_run']} "
                     f"epoch(s)" + (f"; target reached in {ttt:.1f} s" if ttt else ""))
    lines.append(f"  row appended to {output}")
    return "\n".join(lines)
