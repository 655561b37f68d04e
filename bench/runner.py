"""One benchmark run, end to end: distribution -> model -> data -> timed steps -> result row."""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .config import NATURAL_CLASSES, RunConfig
from .errors import BenchInputError
from .results import AccuracyResult, Outcome, Topology, build_row
from .timing import NonFiniteLoss, Timing, run_steps

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


def configure_tensorflow(cfg: RunConfig) -> None:
    """Process-wide TensorFlow settings that must precede the first op."""
    import tensorflow as tf

    if cfg.threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)


@dataclasses.dataclass
class Session:
    """Everything one run needs, built the same way for bench/run.py and the pytest suite."""
    cfg: RunConfig                # resolved
    dist: Any
    source: Any
    global_batch: int
    steps_per_epoch: int | None
    gpu_names: list[str]
    model: Any = None
    optimizer: Any = None
    trainer: Any = None
    desc: Any = None
    step: Callable[[], tuple] | None = None
    device_sync: Callable[[], None] | None = None

    @property
    def topology(self) -> Topology:
        return Topology(workers=self.dist.workers, replicas=self.dist.num_replicas,
                        per_replica_batch=self.cfg.batch_size, global_batch=self.global_batch)

    def build(self) -> "Session":
        """Model, optimizer (built in scope), initial-state broadcast, and the step callable."""
        import keras
        import tensorflow as tf

        import models

        from .train import Trainer, apply_precision_policy, make_optimizer

        cfg, dist = self.cfg, self.dist
        apply_precision_policy(cfg.precision)
        keras.utils.set_random_seed(cfg.seed)
        with dist.scope():
            self.model = models.build_model(cfg.model, num_classes=cfg.num_classes, width=cfg.width,
                                            input_shape=(cfg.image_size, cfg.image_size, 3))
            self.optimizer = make_optimizer(cfg, dist.num_replicas, self.steps_per_epoch)
            # Keras 3 optimizers must be built inside the scope before a custom loop's first step.
            self.optimizer.build(self.model.trainable_variables)
        dist.broadcast_initial_state(self.model, self.optimizer)
        self.desc = models.describe_model(self.model, name=cfg.model, width=cfg.width)
        self.trainer = trainer = Trainer(self.model, self.optimizer, dist, global_batch=self.global_batch,
                                         xla=cfg.xla, track_accuracy=cfg.accuracy_mode)
        if self.source.fixed:  # made once, held on the device, reused every step
            fixed = dist.distribute_fixed(self.source.train_dataset, cfg.batch_size)
            self.step = lambda: trainer.step(fixed)
        else:
            batches = iter(dist.distribute(self.source.train_dataset, cfg.batch_size))
            self.step = lambda: trainer.step(next(batches))
        self.device_sync = tf.experimental.sync_devices if self.gpu_names else None
        return self


def open_session(cfg: RunConfig, source: "DataSource | None" = None) -> Session:
    """Configure TensorFlow and the distribution, resolve the config and load the data (or
    finish `source`, what `read_data` read). Bad input raises BenchInputError here, before
    anything is built."""
    import tensorflow as tf

    from launch import make_distribution

    from .data import load_data

    configure_tensorflow(cfg)
    dist = make_distribution(cfg)
    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    cfg = cfg.resolved(has_gpu=bool(gpus))
    global_batch = cfg.batch_size * dist.num_replicas
    source = load_data(cfg, source)
    steps_per_epoch = None
    if cfg.accuracy_mode:
        steps_per_epoch = source.train_size // global_batch
        if steps_per_epoch < 1:
            raise BenchInputError(f"global batch {global_batch} exceeds the {cfg.data} training split "
                                  f"({source.train_size} images). Received: batch_size={cfg.batch_size}")
    return Session(cfg, dist, source, global_batch, steps_per_epoch, gpu_names)


def execute(cfg: RunConfig) -> RunOutcome:
    """Run one benchmark. Bad input raises BenchInputError before any row exists; every other
    failure becomes a row with status diverged/oom/failed (exit code 1), on the chief, wherever
    one can still be written: a start-up failure too."""
    from launch import get_strategy

    from .data import read_data

    get_strategy(cfg.strategy).check_environment()
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
    import tensorflow as tf

    cfg, dist = session.cfg, session.dist
    progress = _progress(cfg.progress and dist.is_chief)
    timing = accuracy = None
    try:
        session.build()
        if cfg.accuracy_mode:
            timing, accuracy = _train_epochs(session, progress, started)
        else:
            timing = run_steps(session.step, warmup=cfg.warmup_steps, timed=cfg.steps,
                               global_batch=session.global_batch, progress=progress,
                               device_sync=session.device_sync)
        outcome = Outcome("ok")
    except NonFiniteLoss as e:
        outcome = Outcome("diverged", str(e))
    except (tf.errors.ResourceExhaustedError, MemoryError) as e:
        outcome = Outcome("oom", _one_line(e))
    except BenchInputError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure becomes a 'failed' row, never a silent one
        log.exception("run failed")
        outcome = Outcome("failed", _one_line(e))
    ok = outcome.status == "ok"
    # after a failure a peer may be gone: gathering its timings would only wait for it
    row = build_row(cfg, outcome, session=session, timing=timing if ok else None, accuracy=accuracy,
                    wall_s=time.perf_counter() - started)
    if ok:  # likewise a closing barrier
        dist.shutdown()
    return RunOutcome(row, dist.is_chief, 0 if ok else 1)


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
    test = s.source.test_dataset(max(global_batch, 256))
    warmup = min(cfg.warmup_steps, steps_per_epoch - 1)
    for epoch in progress("epochs", cfg.epochs):
        first = epoch == 0
        run_steps(step, warmup=warmup if first else 0,
                  timed=steps_per_epoch - (1 + warmup if first else 0), global_batch=global_batch,
                  timing=timing, first_is_compile=first, device_sync=device_sync)
        # every rank evaluates its own weights on the whole test split; metrics are averaged
        top1, top5 = dist.gather(trainer.evaluate(test)).mean(axis=0)
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
        return f"{row['model']}: status {row.get('status')}: {row.get('error')}"
    ms = lambda k: 1000 * row[k]  # noqa: E731
    lines = [
        f"{row['model']} | {row['strategy']} | {row['workers']} worker(s), {row['replicas']} replica(s) | "
        f"batch {row['per_replica_batch']}x{row['replicas']}={row['global_batch']} | {row['data']} | "
        f"{row['precision']}{' xla' if row['xla'] else ''} | width {row['width']:g}",
        f"  images/sec  {row['images_per_sec_median']:.1f} median (95% CI {row['images_per_sec_median_ci95_low']:.1f}-"
        f"{row['images_per_sec_median_ci95_high']:.1f}), {row['images_per_sec']:.1f} mean (95% CI "
        f"{row['images_per_sec_ci95_low']:.1f}-{row['images_per_sec_ci95_high']:.1f}), jitter "
        f"{row['images_per_sec_jitter']:.1f}, {row['images_per_sec_per_replica']:.1f} per replica",
        f"  step time   {ms('step_time_mean_s'):.1f} ms mean, {ms('step_time_median_s'):.1f} median, "
        f"{ms('step_time_p90_s'):.1f} p90, {ms('step_time_min_s'):.1f} min, std {ms('step_time_std_s'):.1f}"
        f" over {row['timed_steps']} timed steps",
        f"  compile     {row['compile_s']:.2f} s    TFLOP/s {row['tflops']:.3f}    "
        f"params {row['params']:,}    GFLOPs/img {row['gflops_per_image']:.3f}    final loss {row['final_loss']:.4f}",
    ]
    if row.get("top1") is not None:
        ttt = row.get("time_to_target_s")
        lines.append(f"  accuracy    top-1 {row['top1']:.4f}, top-5 {row['top5']:.4f} after {row['epochs_run']} "
                     f"epoch(s)" + (f"; target reached in {ttt:.1f} s" if ttt else ""))
    lines.append(f"  row appended to {output}")
    return "\n".join(lines)
