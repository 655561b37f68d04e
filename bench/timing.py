"""Warmup (untimed) then timed steps, each synchronised before its clock stops."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator


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


def sync_step(step: Callable[[], tuple], index: int,
              device_sync: Callable[[], None] | None = None) -> tuple[float, float, float]:
    """Run one step and wait for it. Fetching the loss to the host waits for the step's
    function (tf.function runs all its stateful ops before returning); on accelerators
    `device_sync` (tf.experimental.sync_devices) also drains the device queues, so no
    asynchronous work escapes the timer."""
    t0 = time.perf_counter()
    loss, correct = step()
    loss = float(loss)
    if device_sync is not None:
        device_sync()
    dt = time.perf_counter() - t0
    if not math.isfinite(loss):
        raise NonFiniteLoss(index, loss)
    return dt, loss, correct if isinstance(correct, float) else float(correct)


def run_steps(step: Callable[[], tuple], *, warmup: int, timed: int, global_batch: int,
              progress: Callable[[str, int], Iterator[int]] | None = None, timing: Timing | None = None,
              first_is_compile: bool = True, device_sync: Callable[[], None] | None = None,
              before_timed: Callable[[], None] | None = None, data_wait: WaitClock | None = None,
              profile: tuple[int, int] | None = None, tracer: "Tracer | None" = None) -> Timing:
    """The first step (trace + compile) is timed apart as compile_s; then `warmup` untimed
    steps; then `before_timed` (e.g. a peak-memory reset); then `timed` steps whose seconds
    are kept, each with the part of it spent waiting for its batch where `data_wait` times
    the input (real data; a fixed batch waits for nothing). Timed steps `profile` (first,
    last; counted from 1) run under `tracer` (on this rank, where given) and are left out."""
    timing = timing or Timing()
    bar = progress or (lambda desc, n: range(n))
    index = 0
    if first_is_compile:
        timing.compile_s, loss, _ = sync_step(step, index, device_sync)
        timing.losses.append(loss)
        index += 1
    for _ in bar("warmup", warmup):
        _, loss, _ = sync_step(step, index, device_sync)
        timing.losses.append(loss)
        index += 1
    if before_timed is not None:
        before_timed()
    if data_wait is not None:
        data_wait.take()  # what the untimed steps waited
    first, last = profile or (0, -1)
    for k in bar("timed steps", timed):
        k += 1
        if first <= k <= last:  # profiled: run (traced), but not measured
            if k == first and tracer is not None:
                tracer.start()
            with tracer.step(k) if tracer is not None else contextlib.nullcontext():
                _, loss, _ = sync_step(step, index, device_sync)
            if k == last and tracer is not None:
                tracer.stop()
            timing.losses.append(loss)
            index += 1
            if data_wait is not None:
                data_wait.take()
            continue
        dt, loss, correct = sync_step(step, index, device_sync)
        if data_wait is not None:
            timing.data_waits.append(data_wait.take())
        timing.step_times.append(dt)
        timing.losses.append(loss)
        timing.correct += correct
        timing.images += global_batch
        index += 1
    return timing
