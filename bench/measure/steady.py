"""When to start and when to stop timing: the warmup found by MSER-5 (White 1997, the Marginal
Standard Error Rule on batch means of 5), and the test that a median's 95% CI is tight enough.
Pure numpy, on one series of step times: in a distributed run, the slowest rank's per step
(bench.measure.stats.slowest_rank_per_step), gathered, so every rank decides alike."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bench.config.schema import MAX_WARMUP, MIN_WARMUP
from bench.measure.stats import median_ci95, median_ci_rel

MSER_BATCH = 5
RULE_FIXED, RULE_MSER5, RULE_MSER5_MAX = "fixed", "mser5", "mser5-max"


def mser5(series: Sequence[float], batch: int = MSER_BATCH) -> int:
    """MSER-5's truncation point (a count of leading steps to drop, a multiple of `batch`): the
    d that minimises the squared standard error of the mean of the batch means left,
    sum((z_i - mean(z_d..))^2) / (k - d)^2 over batch means z. As White advises, d is searched
    in the first half of the batches only (past it the rule chases the noise of the last few);
    trailing steps short of a batch are left out. 0 with fewer than 2 batches (nothing to judge)."""
    x = np.asarray(series, dtype=float)
    k = x.size // batch
    if k < 2:
        return 0
    z = x[:k * batch].reshape(k, batch).mean(axis=1)
    best, best_j = math.inf, 0
    tie = 1e-12 * float(z.mean()) ** 2  # rounding noise: on a tie the shorter truncation wins
    for j in range(min(k // 2, k - 2) + 1):  # two batches left at least: one alone has no spread
        rest = z[j:]
        se2 = float(((rest - rest.mean()) ** 2).sum()) / rest.size ** 2
        if se2 < best - tie:
            best, best_j = se2, j
    return best_j * batch


def warmup_truncation(series: Sequence[float], lo: int = MIN_WARMUP, hi: int = MAX_WARMUP) -> tuple[int, str]:
    """MSER-5's truncation bounded to [lo, hi], and the rule that set it: mser5, or mser5-max
    where the rule asked for more than `hi`."""
    d = mser5(series)
    if d > hi:
        return hi, RULE_MSER5_MAX
    return max(d, lo), RULE_MSER5


@dataclass(frozen=True)
class Decision:
    """Where timing stands after some steps: whether to stop, the leading steps to drop as warmup
    and the rule that said so, and the median CI's relative half-width of the steps kept."""
    stop: bool
    dropped: int
    rule: str
    ci_rel: float


@dataclass(frozen=True)
class Plan:
    """How long the timed part runs. `steps` timed steps at least, after the warmup `find`s
    (MSER-5 within [MIN_WARMUP, MAX_WARMUP]) where asked; with `target_ci`, more until the
    median's 95% CI half-width is within target_ci of it, up to `max_steps` kept steps."""
    steps: int
    find: bool = False
    target_ci: float | None = None
    max_steps: int | None = None

    @property
    def adaptive(self) -> bool:
        return self.find or self.target_ci is not None

    @property
    def limit(self) -> int:
        """The most timed steps kept: --max-steps with a CI target, else --steps."""
        return self.max_steps if self.target_ci is not None and self.max_steps else self.steps

    @property
    def cap(self) -> int:
        """The most steps the timed part runs (warmup found included)."""
        return self.limit + (MAX_WARMUP if self.find else 0)

    def decide(self, series: Sequence[float], ahead: int = 0) -> Decision:
        """The decision on the series timed so far (every rank's slowest step, so that every rank
        takes the same one), `ahead` more steps being already under way (they will be timed too)."""
        n = len(series) + ahead
        dropped, rule = warmup_truncation(series) if self.find else (0, RULE_FIXED)
        kept = n - dropped
        if self.find and kept > self.limit:
            # the warmup found can shrink between two decisions (MSER-5 on a longer series), which
            # would keep more steps than the limit: the extra leading ones, nearest the warmup, go too
            dropped, kept = n - self.limit, self.limit
        rel = median_ci_rel(series[dropped:])
        tight = self.target_ci is None or _tight_whatever_comes(series[dropped:], ahead, self.target_ci)
        stop = n >= self.cap or kept >= self.limit or (kept >= self.steps and tight)
        return Decision(stop, dropped, rule, rel)


def _tight_whatever_comes(kept: Sequence[float], ahead: int, target: float) -> bool:
    """Whether the median's CI is within `target` of it, and stays so whatever the `ahead` steps
    under way take: the CI's ends and the median are order statistics, each monotone in the new
    values, so the widest case is bounded by the ends with the new steps at 0 and at infinity."""
    x = np.asarray(kept, dtype=float)
    if not ahead:
        return median_ci_rel(x) <= target
    fast, slow = np.r_[x, np.zeros(ahead)], np.r_[x, np.full(ahead, np.inf)]
    lo, hi, med = median_ci95(fast)[0], median_ci95(slow)[1], float(np.median(fast))
    return med > 0 and (hi - lo) / 2 / med <= target
