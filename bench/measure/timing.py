"""Warmup (untimed) then timed steps, each synchronised before its clock stops (or, on an
asynchronous backend, with the next step dispatched first)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from bench.measure.energy import EnergyReading
from bench.measure.stats import median_ci_rel, slowest_rank_per_step
from bench.measure.steady import MSER_BATCH, RULE_FIXED, Decision, Plan


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run ends with status 'diverged'."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite loss {loss} at step {step}")
        self.step, self.loss = step, loss


class Tracer:
    """A framework profiler around some steps: `start`, a `step(k)` context per step, `stop`."""

    def __init__(self, start: Callable[[], None], stop: Callable[[], None], step: Callable[[int], object]):
        self.start, self.stop, self.step = start, stop, step


class WaitClock:
    """Times how long the step waits for its next batch: `wrap` an iterator of batches, and
    `take` the seconds spent in its `next` since the last take."""

    def __init__(self) -> None:
        self._waited = 0.0

    def wrap(self, batches: Iterator) -> Iterator:
        def timed() -> Iterator:
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                self._waited += time.perf_counter() - t0
                yield batch
        return timed()

    def take(self) -> float:
        waited, self._waited = self._waited, 0.0
        return waited


@dataclass
class Timing:
    compile_s: float = math.nan
    step_times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    correct: float = 0.0
    images: int = 0
    data_waits: list[float] = field(default_factory=list)  # per timed step, seconds spent waiting for the batch
    peak_mem_bytes: int | None = None  # over the timed part, on this rank (bench.memory)
    mem_source: str = ""
    process_peak_mem_bytes: int | None = None  # the process's host RSS peak since start-up, on this rank
    comm: dict = field(default_factory=dict)  # columns from the strategy's timeline and autotuner (the chief's)
    net_tx_bytes: int | None = None  # this rank's host's interface bytes over the timed steps (not loopback)
    net_rx_bytes: int | None = None
    # with run_steps(keep_diverged=True): the first step whose loss was non-finite, and that loss
    diverged: NonFiniteLoss | None = None
    warmup_dropped: int = 0  # steps after the compile step left out as warmup, fixed or found
    warmup_rule: str = RULE_FIXED  # what set warmup_dropped (bench.measure.steady)
    target_met: bool | None = None  # with a CI target: whether the steps kept reached it
    timed_run: int = 0  # steps run from `before_timed` on: timed, profiled, and warmup found among them
    energy: EnergyReading | None = None  # this process's devices over the timed window (bench.measure.energy)


def sync_step(step: Callable[[], tuple], index: int, device_sync: Callable[[], None] | None = None,
              timing: "Timing | None" = None) -> tuple[float, float, float]:
    """Run one step and wait for it. Fetching the loss to the host waits for the step's
    function (tf.function runs all its stateful ops before returning); on accelerators
    `device_sync` (tf.experimental.sync_devices) also drains the device queues, so no
    asynchronous work escapes the timer. A non-finite loss raises NonFiniteLoss, unless
    `timing` is given to note it in (run_steps(keep_diverged=True))."""
    t0 = time.perf_counter()
    loss, correct = _wait(step(), index, device_sync, timing)
    return time.perf_counter() - t0, loss, correct


def _wait(outputs: tuple, index: int, device_sync: Callable[[], None] | None = None,
          timing: "Timing | None" = None) -> tuple[float, float]:
    """Fetch a dispatched step's (loss, #correct) to the host, which waits for it; check the loss."""
    loss, correct = outputs
    loss = float(loss)
    if device_sync is not None:
        device_sync()
    if not math.isfinite(loss):
        if timing is None:
            raise NonFiniteLoss(index, loss)
        timing.diverged = timing.diverged or NonFiniteLoss(index, loss)
    return loss, correct if isinstance(correct, float) else float(correct)


class _Judge:
    """The plan's decisions during the timed part: once `plan.steps` would be in, then every
    `MSER_BATCH` steps (every step near the limit), on the series of every rank's slowest step
    (`gather`, a collective: every rank calls it at the same step, and takes the same decision
    from the same data). `ahead`: steps already under way when it decides (pipelined: one)."""

    def __init__(self, plan: Plan | None, timed: int, gather: Callable[[list[float]], np.ndarray] | None,
                 ahead: int = 0):
        self.plan = plan if plan is not None and plan.adaptive else None
        self.cap = self.plan.cap if self.plan is not None else timed
        self.gather = gather or (lambda values: np.asarray(values, dtype=float)[None, :])
        self.ahead = ahead
        self.next_at = self.plan.steps - ahead if self.plan is not None else 0
        self.final: Decision | None = None  # the decision that stopped the timing

    def stop(self, series: list[float]) -> bool:
        """After a timed step: whether timing ends once the steps under way are done."""
        n = len(series)
        if self.plan is None or n < self.next_at:
            return n + self.ahead >= self.cap
        decision = self.plan.decide(slowest_rank_per_step(self.gather(series)), self.ahead)
        left = self.plan.limit - (n + self.ahead - decision.dropped)
        self.next_at = n + max(1, min(MSER_BATCH, left))
        if decision.stop:
            self.final = decision
        return decision.stop

    def settle(self, timing: Timing, start: int, global_batch: int) -> None:
        """Drop the warmup found from the timed steps (those from `start`): the one the stopping
        decision found (so that --steps are left), or at the cap one found now; and note whether
        the CI target was met by the steps the row keeps."""
        if self.plan is None:
            return
        slowest = slowest_rank_per_step(self.gather(timing.step_times[start:]))
        final = self.final or self.plan.decide(slowest)
        d = final.dropped
        if d:
            del timing.step_times[start:start + d]
            del timing.data_waits[start:start + d]
            timing.images -= d * global_batch
        timing.warmup_dropped += d
        timing.warmup_rule = final.rule
        if self.plan.target_ci is not None:
            timing.target_met = bool(median_ci_rel(slowest[d:]) <= self.plan.target_ci)


def _timed_pipelined(step: Callable[[], tuple], steps: Iterable[int], judge: _Judge, index: int, timing: Timing,
                     global_batch: int, device_sync: Callable[[], None] | None, data_wait: WaitClock | None,
                     keep: Timing | None) -> None:
    """Timed steps with the next one dispatched before the host waits for the current one, as
    Keras' `fit` runs them, so the device never idles while the host dispatches. A step's time
    is the interval between the completions of it and of its predecessor: in steady state the
    time the device (or, when host-bound, the host) spends per step. The last step also waits
    for the whole state, so the intervals add up to the wall time of the timed part. The judge
    decides after each step while the next one runs: when it stops, that one is the last."""
    start = len(timing.step_times)
    t_prev = time.perf_counter()
    pending, last = step(), judge.cap == 1
    for _ in steps:  # at most judge.cap, through the progress bar
        ahead = None if last else step()
        loss, correct = _wait(pending, index, device_sync if last else None, keep)
        t = time.perf_counter()
        timing.step_times.append(t - t_prev)
        t_prev, pending = t, ahead
        if data_wait is not None:
            timing.data_waits.append(data_wait.take())
        timing.losses.append(loss)
        timing.correct += correct
        timing.images += global_batch
        index += 1
        if last:
            return
        last = judge.stop(timing.step_times[start:])  # then the step now in flight is the last


def run_steps(step: Callable[[], tuple], *, warmup: int, timed: int, global_batch: int,
              progress: Callable[[str, int], Iterator[int]] | None = None, timing: Timing | None = None,
              first_is_compile: bool = True, device_sync: Callable[[], None] | None = None,
              before_timed: Callable[[], None] | None = None, after_timed: Callable[[], None] | None = None,
              data_wait: WaitClock | None = None,
              profile: tuple[int, int] | None = None, tracer: "Tracer | None" = None,
              pipelined: bool = False, keep_diverged: bool = False,
              plan: Plan | None = None, gather: Callable[[list[float]], np.ndarray] | None = None) -> Timing:
    """The first step (trace + compile) is timed apart as compile_s; then `warmup` untimed
    steps; then `before_timed` (e.g. a peak-memory reset); then `timed` steps whose seconds
    are kept, each with the part of it spent waiting for its batch where `data_wait` times
    the input (real data; a fixed batch waits for nothing). Timed steps `profile` (first,
    last; counted from 1) run under `tracer` (on this rank, where given) and are left out.
    `after_timed` runs once the timed steps are done (e.g. to stop a communication timeline).
    `pipelined` (a backend whose steps dispatch asynchronously, and no profiled steps) keeps one
    step in flight during the timed part; otherwise each step is waited for in turn.
    An adaptive `plan` (bench.measure.steady: a warmup found, a CI target) runs `plan.steps`
    or more timed steps, decided through `gather` (the distribution's; every rank decides alike),
    and then drops the leading ones it found to be warmup (timing.warmup_dropped, warmup_rule).
    A non-finite loss raises NonFiniteLoss at once, or with `keep_diverged` (a throughput run,
    as tf_cnn_benchmarks keeps timing) is noted in `timing.diverged` while every step still runs."""
    timing = timing or Timing()
    keep = timing if keep_diverged else None
    bar = progress or (lambda desc, n: range(n))
    pipelined = pipelined and profile is None
    judge = _Judge(plan, timed, gather, ahead=1 if pipelined else 0)
    index = 0
    if first_is_compile:
        timing.compile_s, loss, _ = sync_step(step, index, device_sync, keep)
        timing.losses.append(loss)
        index += 1
    for _ in bar("warmup", warmup):
        _, loss, _ = sync_step(step, index, device_sync, keep)
        timing.losses.append(loss)
        index += 1
    timing.warmup_dropped += warmup
    if before_timed is not None:
        before_timed()
    if data_wait is not None:
        data_wait.take()  # what the untimed steps waited
    start, ran = len(timing.step_times), len(timing.losses)
    if pipelined and judge.cap > 0:
        _timed_pipelined(step, bar("timed steps", judge.cap), judge, index, timing, global_batch, device_sync,
                         data_wait, keep)
        judge.settle(timing, start, global_batch)
        timing.timed_run += len(timing.losses) - ran
        if after_timed is not None:
            after_timed()
        return timing
    first, last = profile or (0, -1)
    for k in bar("timed steps", judge.cap):
        k += 1
        if first <= k <= last:  # profiled: run (traced), but not measured
            if k == first and tracer is not None:
                tracer.start()
            with tracer.step(k) if tracer is not None else contextlib.nullcontext():
                _, loss, _ = sync_step(step, index, device_sync, keep)
            if k == last and tracer is not None:
                tracer.stop()
            timing.losses.append(loss)
            index += 1
            if data_wait is not None:
                data_wait.take()
            continue
        dt, loss, correct = sync_step(step, index, device_sync, keep)
        if data_wait is not None:
            timing.data_waits.append(data_wait.take())
        timing.step_times.append(dt)
        timing.losses.append(loss)
        timing.correct += correct
        timing.images += global_batch
        index += 1
        if judge.plan is not None and k > last and judge.stop(timing.step_times[start:]):
            break
    judge.settle(timing, start, global_batch)
    timing.timed_run += len(timing.losses) - ran
    if after_timed is not None:
        after_timed()
    return timing
