"""One benchmark run, end to end: distribution -> model -> data -> timed steps -> result row; every failure after start-up becomes a row with its status."""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from bench.backends.keras_common import make_learning_rate
from bench.config.schema import RunConfig
from bench.data.source import read_data
from bench.errors import BenchInputError, ExitCode, PredictedOOM, Status, error_line
from bench.measure.energy import EnergyMeter, choose_source
from bench.measure.probes import MemoryGuard, NetCounter, memory_floor, process_peak_bytes
from bench.measure.steady import Plan
from bench.measure.timing import NonFiniteLoss, Timing, run_steps
from bench.results.mllog import RunLog, run_keys
from bench.results.provenance import new_run_id
from bench.results.row import AccuracyResult, Outcome, build_row
from bench.results.store import append_row
from bench.runner.aggregate import run_facts, session_measurements
from bench.runner.session import Session, open_session
from bench.runner.summary import summary_text
from bench.runner.validate import require_resolved
from launch import check_environment, get_strategy

log = logging.getLogger("cnnbench")
_REPO = str(Path(__file__).resolve().parents[2])  # MLLOG lines name their call sites relative to it


@dataclasses.dataclass
class RunOutcome:
    row: dict[str, Any]
    is_chief: bool
    exit_code: ExitCode
    mllog: tuple[str, ...] = ()  # the chief's MLLOG lines for --mllog (none before the run started)


def _progress(enabled: bool) -> Callable[[str, int], Iterator[int]]:
    def bar(desc: str, n: int):
        if not enabled or n == 0:
            return range(n)
        from tqdm import tqdm
        return tqdm(range(n), desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
    return bar


@dataclasses.dataclass
class _Progress:
    """How far a run has got, for the memory guard's row: its configuration, and its session once open."""
    cfg: RunConfig
    started: float
    session: Session | None = None


def execute(cfg: RunConfig, *, guard: bool = True) -> RunOutcome:
    """Run one benchmark. Bad input raises BenchInputError before any row exists; a memory
    estimate beyond the memory available raises PredictedOOM (cfg.on_predicted_oom "refuse")
    or becomes a row with status oom_predicted ("row"); every other failure becomes a row with
    status diverged/oom/failed (exit code 1), on the chief, wherever one can still be written:
    a start-up failure too. With `guard` (the default: every run
    process has one) a watcher ends the process with an `oom` row, exit 1, when the host's
    available memory falls below the guard's floor (bench.measure.probes.MemoryGuard). `cfg` is
    resolved (bench.runner.validate.prepare)."""

    require_resolved(cfg)
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

    session = progress.session
    try:
        chief = session.dist.is_chief if session is not None else get_strategy(progress.cfg.strategy).env_rank() == 0
        if chief:
            cfg = session.cfg if session is not None else progress.cfg
            facts = run_facts(session) if session is not None else None
            row = build_row(cfg, Outcome(Status.OOM, message), facts=facts,
                            wall_s=time.perf_counter() - progress.started)
            row["process_peak_mem_bytes"] = process_peak_bytes()
            append_row(cfg.output, row)
            print(summary_text(row, cfg.output), flush=True)
        else:
            print(f"error: this rank stopped: {message}", file=sys.stderr, flush=True)
    except BaseException as e:  # noqa: BLE001 - the process must end all the same
        print(f"error: {message}; its row could not be written: {error_line(e)}", file=sys.stderr, flush=True)
    finally:
        sys.stderr.flush()
        os._exit(ExitCode.FAILED)


def _execute(cfg: RunConfig, progress_state: _Progress) -> RunOutcome:

    check_environment(cfg.strategy)
    # the trace's folder and the MLLOG's cnnbench_run_id name the row's id
    if (cfg.trace_dir is not None or cfg.mllog is not None) and cfg.run_id is None:
        cfg = dataclasses.replace(cfg, run_id=new_run_id())
    mlog = RunLog(cfg.mllog is not None, root_dir=_REPO)
    mlog.init_start()
    progress_state.cfg = cfg
    started = time.perf_counter()
    # bad data is input: found with numpy before TensorFlow starts (and prints its start-up lines)
    source = read_data(cfg)
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
        if cfg.mode == "input":
            session.build_input_step()
        else:
            session.describe()
            session.check_memory()
            session.build_model()
            session.build_step()
        if cfg.accuracy_mode:
            timing, accuracy = _train_epochs(session, progress, started, mlog)
        else:
            timeline = session.comm_timeline()
            net = NetCounter()
            # sampling from before the compile step: samples already flow when the window opens
            meter = EnergyMeter(choose_source(bool(session.gpu_names), cfg.energy_interval_ms / 1000.0)).open()

            def before_timed() -> None:
                session.memory.reset()
                net.start()
                meter.start()
                if timeline is not None:
                    timeline.start()

            def after_timed() -> None:
                meter.stop()
                net.stop()
                if timeline is not None:
                    timeline.stop()

            step = session.step
            warmup = cfg.fixed_warmup
            plan = Plan(cfg.steps, find=warmup is None, target_ci=cfg.target_ci, max_steps=cfg.max_steps)
            try:
                timing = run_steps(step.run, warmup=warmup or 0, timed=cfg.steps, plan=plan, gather=dist.gather,
                                   global_batch=session.global_batch, progress=progress,
                                   device_sync=step.device_sync, before_timed=before_timed,
                                   after_timed=after_timed,
                                   data_wait=None if session.source.fixed else session.data_wait,
                                   profile=cfg.profile_range, tracer=session.tracer(), pipelined=step.pipelined,
                                   keep_diverged=cfg.mode == "train")
            finally:
                meter.close()
            timing.energy = meter.reading
            timing.comm = session.comm_columns(timing.timed_run)  # a found warmup ran under the timeline too
            timing.net_tx_bytes, timing.net_rx_bytes = net.sent, net.received
        timing.peak_mem_bytes, timing.mem_source = session.memory.peak(), session.memory.label
        timing.process_peak_mem_bytes = process_peak_bytes()
        ran_all = True
        outcome = Outcome(Status.OK)
        if timing.diverged is not None:  # a throughput run timed every step anyway: its row keeps them
            outcome = Outcome(Status.DIVERGED, f"{timing.diverged}; every step was run and timed")
        if cfg.save_weights and dist.is_chief:
            outcome = _save_weights(session, outcome)
    except NonFiniteLoss as e:
        outcome = Outcome(Status.DIVERGED, str(e))
    except PredictedOOM as e:
        if cfg.on_predicted_oom == "refuse":  # the caller refuses it on one line (bench/run.py: exit 2)
            raise
        outcome = Outcome(Status.OOM_PREDICTED, str(e))
    except BenchInputError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure becomes a row, never a silent one
        if session.backend.is_oom(e):
            outcome = Outcome(Status.OOM, error_line(e))
        else:
            log.exception("run failed")
            outcome = Outcome(Status.FAILED, error_line(e))
    finished = ran_all
    # after a failure a peer may be gone: gathering its timings would only wait for it
    measurements = session_measurements(session, timing) if finished else None
    row = build_row(cfg, outcome, facts=run_facts(session), measurements=measurements, accuracy=accuracy,
                    wall_s=time.perf_counter() - started)
    if row.get("process_peak_mem_bytes") is None:  # a failed run: this process's own, no gathering
        row["process_peak_mem_bytes"] = process_peak_bytes()
    if finished:  # likewise a closing barrier
        dist.shutdown()
    # success: the run ended as it was asked to, at the target, or after every epoch where none was set
    mlog.run_stop(outcome.status == Status.OK and accuracy is not None and accuracy.target_reached is not False)
    return RunOutcome(row, dist.is_chief, ExitCode.OK if outcome.status == Status.OK else ExitCode.FAILED,
                      mllog=tuple(mlog.lines) if dist.is_chief and mlog.run_started else ())


def _save_weights(session: Session, outcome: Outcome) -> Outcome:
    """--save-weights once every step has run; a failure to write (a full disk) fails the row but
    keeps its timing."""
    path = session.cfg.save_weights
    try:
        session.save_weights(path)
    except Exception as e:  # noqa: BLE001 - the path was checked before the run: what is left is the disk
        log.error("could not save the weights to %s: %s", path, error_line(e))
        return Outcome(Status.FAILED, f"could not save the weights to {path}: {error_line(e)}")
    return outcome


def _startup_failure(cfg: RunConfig, error: BaseException, wall_s: float) -> RunOutcome:
    """The row of a run whose strategy or devices failed to start; only the would-be chief keeps it."""

    row = build_row(cfg, Outcome(Status.FAILED, error_line(error)), wall_s=wall_s)
    return RunOutcome(row, get_strategy(cfg.strategy).env_rank() == 0, ExitCode.FAILED)


def _mllog_keys(session: Session) -> dict[str, Any]:
    """The run's MLLOG keys (bench.results.mllog.run_keys), from what the session built: the
    learning rate's peak and warmup as make_learning_rate made them, the optimizer's own settings."""
    cfg, dist = session.cfg, session.dist
    lr = make_learning_rate(cfg, dist.num_replicas, session.steps_per_epoch)
    if isinstance(lr, float):
        base_lr, warmup_epochs = lr, 0.0
    else:  # --scale-lr's linear warmup to lr x replicas
        sched = lr.get_config()
        base_lr, warmup_epochs = sched["target"], sched["warmup_steps"] / session.steps_per_epoch
    opt = getattr(session.optimizer, "inner_optimizer", session.optimizer)  # under a LossScaleOptimizer
    hyper = {k: float(getattr(opt, k)) for k in ("momentum", "beta_1", "beta_2", "epsilon") if hasattr(opt, k)}
    device = session.gpu_names[0] if session.gpu_names else "CPU"
    return run_keys(platform=f"{dist.num_replicas}x{device}", global_batch=session.global_batch,
                    train_samples=session.source.train_size, eval_samples=len(session.source.test.labels),
                    seed=cfg.seed, optimizer=cfg.optimizer, base_lr=float(base_lr), warmup_epochs=warmup_epochs,
                    weight_decay=cfg.weight_decay, hyper=hyper, run_id=cfg.run_id)


def _train_epochs(session: Session, progress, started: float, mlog: RunLog) -> tuple[Timing, AccuracyResult]:
    """Accuracy mode: whole epochs, test-split evaluation after each, stop at the target. `mlog`
    records MLPerf's run_start, epoch and evaluation events (MLPerf counts epochs from 1)."""
    s = session
    cfg, step, dist = s.cfg, s.step, s.dist
    steps_per_epoch, global_batch = s.steps_per_epoch, s.global_batch
    timing = Timing()
    result = AccuracyResult(target_reached=False if cfg.target_accuracy else None)
    test_batch = max(global_batch, 256)  # each rank evaluates the whole test split, this many images at a time
    # the first epoch's first step compiles; warmup leaves it at least one step to time where it has two
    warmup = max(0, min(cfg.fixed_warmup, steps_per_epoch - 2))
    if mlog.enabled:
        mlog.run_start(_mllog_keys(s))
    for epoch in progress("epochs", cfg.epochs):
        first = epoch == 0
        mlog.start("epoch_start", epoch_num=epoch + 1)
        run_steps(step.run, warmup=warmup if first else 0,
                  timed=steps_per_epoch - (1 + warmup if first else 0), global_batch=global_batch,
                  timing=timing, first_is_compile=first, device_sync=step.device_sync,
                  before_timed=s.memory.reset if first else None, data_wait=s.data_wait, pipelined=step.pipelined)
        mlog.end("epoch_stop", epoch_num=epoch + 1)
        mlog.start("eval_start", epoch_num=epoch + 1)
        # every rank evaluates its own weights on the whole test split; metrics are averaged
        top1, top5 = dist.gather(step.trainer.evaluate(s.backend.test_batches(s.source, test_batch))).mean(axis=0)
        mlog.event("eval_accuracy", float(top1), epoch_num=epoch + 1)
        mlog.end("eval_stop", epoch_num=epoch + 1)
        result.top1, result.top5, result.epochs_run = float(top1), float(top5), epoch + 1
        result.top1_by_epoch.append(float(top1))
        result.epoch_end_s.append(time.perf_counter() - started)
        log.info("epoch %d: test top-1 %.4f top-5 %.4f", epoch + 1, top1, top5)
        if cfg.target_accuracy and top1 >= cfg.target_accuracy:
            result.target_reached, result.time_to_target_s = True, time.perf_counter() - started
            break
    return timing, result
