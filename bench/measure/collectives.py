"""Collective bandwidth as nccl-tests reports it: an all-reduce of each message size, timed over
iterations that every rank runs in step, the slowest rank's time per iteration, its median with a
distribution-free CI; algorithm bandwidth = size / time, bus bandwidth = algbw x 2(n-1)/n for n
ranks (what each rank's link carries in a ring, so that figures compare across rank counts).
Pure: the all-reduce itself is the strategy adapter's (Distribution.allreduce_op)."""
from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Callable

import numpy as np

from bench.errors import BenchInputError
from bench.measure.stats import median_ci95

SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30}
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
GB = 1e9  # nccl-tests' GB/s


def parse_size(name: str, text: str) -> int:
    """A byte count: 1048576, 1K, 256M, 1G (binary units, as nccl-tests' -b/-e); BenchInputError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in SIZE_UNITS or int(m.group(1)) == 0:
        raise BenchInputError(f"--{name.replace('_', '-')} must be a positive byte count such as 1024, 1K, 256M or "
                              f"1G. Received: {name}={text!r}")
    return int(m.group(1)) * SIZE_UNITS[unit]


def message_sizes(lo: int, hi: int) -> list[int]:
    """lo, 2 lo, 4 lo, ... up to hi (nccl-tests' -f 2)."""
    sizes = []
    size = lo
    while size <= hi:
        sizes.append(size)
        size *= 2
    return sizes


def bus_factor(ranks: int) -> float:
    """What each rank's link carries per byte of an all-reduce in a ring: 2(n-1)/n."""
    return 2.0 * (ranks - 1) / ranks if ranks > 0 else math.nan


@dataclasses.dataclass(frozen=True)
class SizeResult:
    size_bytes: int
    elements: int
    times: np.ndarray  # the slowest rank's seconds, per timed iteration
    ranks: int

    def columns(self) -> dict:
        t = self.times
        median = float(np.median(t))
        lo, hi = median_ci95(t)
        algbw = self.size_bytes / median / GB
        factor = bus_factor(self.ranks)
        return {"size_bytes": self.size_bytes, "elements": self.elements, "iters": int(t.size),
                "time_median_s": median, "time_median_ci95_low_s": lo, "time_median_ci95_high_s": hi,
                "time_mean_s": float(t.mean()), "time_min_s": float(t.min()), "time_max_s": float(t.max()),
                "algbw_gbs": algbw, "busbw_gbs": algbw * factor,
                # a slower time is a lower bandwidth: the CI's ends swap
                "busbw_ci95_low_gbs": self.size_bytes / hi / GB * factor,
                "busbw_ci95_high_gbs": self.size_bytes / lo / GB * factor}


def time_allreduce(op: Callable[[], None], gather: Callable[[list[float]], np.ndarray], *, warmup: int, iters: int,
                   budget_s: float, min_iters: int = 3) -> np.ndarray:
    """Per timed iteration, the slowest rank's seconds of one all-reduce (`op` runs it and waits for
    it). The warmup's slowest iteration, agreed through `gather` (a collective), sets how many
    iterations fit in `budget_s` (at least `min_iters`, at most `iters`), so that every rank
    runs the same number."""
    first = []
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        op()
        first.append(time.perf_counter() - t0)
    slowest = float(gather([max(first[1:] or first)]).max())
    n = int(min(iters, max(min_iters, budget_s // max(slowest, 1e-9))))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        op()
        times.append(time.perf_counter() - t0)
    return np.asarray(gather(times), dtype=float).max(axis=0)
