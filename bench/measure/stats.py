"""Step-time statistics, the throughput figures derived from them, and the test that compares two
configurations. Pure numpy/scipy (scipy.stats only where a comparison is made)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

MAD_TO_SIGMA = 1.4826  # makes the median absolute deviation estimate sigma for normal data


@dataclass(frozen=True)
class StepStats:
    timed_steps: int
    step_time_mean_s: float
    step_time_median_s: float
    step_time_p90_s: float
    step_time_min_s: float
    step_time_max_s: float
    step_time_std_s: float
    step_time_ci95_low_s: float
    step_time_ci95_high_s: float
    step_time_median_ci95_low_s: float
    step_time_median_ci95_high_s: float
    step_time_median_ci95_rel: float   # the median CI's half-width over the median (what --target-ci bounds)
    step_time_jitter_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def ci95_halfwidth(values: Sequence[float]) -> float:
    """Half-width of the two-sided 95% Student-t confidence interval of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return math.nan
    # scipy.special's quantile, the one scipy.stats' t.ppf calls: importing scipy.stats cost
    # every run 0.6 s of CPU, scipy.special 0.16 s
    from scipy.special import stdtrit

    return float(stdtrit(x.size - 1, 0.975) * x.std(ddof=1) / math.sqrt(x.size))


def median_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Distribution-free 95% confidence interval of the median, from order statistics: the
    ranks come from Binomial(n, 1/2). Below 6 values it is the whole range."""
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return math.nan, math.nan
    if n < 6:
        return float(x[0]), float(x[-1])
    from scipy.special import bdtr

    # Binomial(n, 1/2)'s quantiles: the smallest k whose CDF reaches q (scipy.stats' binom.ppf)
    cdf = bdtr(np.arange(n + 1), n, 0.5)
    lo = int(np.searchsorted(cdf, 0.025))       # P(B <= lo - 1) <= 2.5%
    hi = int(np.searchsorted(cdf, 0.975))       # symmetric
    return float(x[max(lo - 1, 0)]), float(x[min(hi, n - 1)])


def median_ci_rel(values: Sequence[float]) -> float:
    """The half-width of the median's 95% CI (median_ci95: asymmetric, so half its width) over the
    median: the relative precision --target-ci asks for. NaN with no values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan
    lo, hi = median_ci95(x)
    med = float(np.median(x))
    return (hi - lo) / 2 / med if med > 0 else math.nan


def jitter(values: Sequence[float]) -> float:
    """Robust spread: 1.4826 x the median absolute deviation from the median."""
    x = np.asarray(values, dtype=float)
    return float(MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))))


def slowest_rank_per_step(per_rank: Sequence[Sequence[float]]) -> np.ndarray:
    """A synchronous step lasts as long as its slowest rank: the max over ranks, step by step."""
    arr = np.asarray(per_rank, dtype=float)
    if arr.ndim == 1:
        return arr
    return arr.max(axis=0)


def step_stats(step_times: Sequence[float]) -> StepStats:
    """Summary statistics of per-step seconds (std is the sample std, ddof=1)."""
    x = np.asarray(step_times, dtype=float)
    if x.size == 0:
        raise ValueError("no step times to summarise")
    mean = float(x.mean())
    half = ci95_halfwidth(x)
    med_lo, med_hi = median_ci95(x)
    return StepStats(
        timed_steps=int(x.size), step_time_mean_s=mean, step_time_median_s=float(np.median(x)),
        step_time_p90_s=float(np.percentile(x, 90)), step_time_min_s=float(x.min()),
        step_time_max_s=float(x.max()), step_time_std_s=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        step_time_ci95_low_s=mean - half, step_time_ci95_high_s=mean + half,
        step_time_median_ci95_low_s=med_lo, step_time_median_ci95_high_s=med_hi,
        step_time_median_ci95_rel=median_ci_rel(x),
        step_time_jitter_s=jitter(x))


LATENCY_PERCENTILES = (50, 90, 95, 99)


def latency_columns(step_times: Sequence[float], global_batch: int) -> dict:
    """Per-batch latency percentiles in ms (each timed step is one synchronised batch), and the
    median batch's latency per image."""
    x = 1000.0 * np.asarray(step_times, dtype=float)
    out = {f"latency_p{p}_ms": float(np.percentile(x, p)) for p in LATENCY_PERCENTILES}
    out["latency_per_image_ms"] = out["latency_p50_ms"] / global_batch
    return out


def throughput(stats: StepStats, *, global_batch: int, replicas: int, flops_per_image: float,
               passes: float = 3.0) -> dict:
    """images/sec (mean- and median-based, with a 95% CI and per replica) and achieved TFLOP/s.

    A step costs `passes` x the forward FLOPs: about 3 to train (forward, plus backward for
    activations and for weights), 1 for inference.
    """
    def rate(step_s: float) -> float:
        return global_batch / step_s if step_s > 0 else math.nan

    ips_mean = global_batch / stats.step_time_mean_s
    ips_median = global_batch / stats.step_time_median_s
    return {  # a slower step means fewer images: the CIs' ends swap
        "images_per_sec": ips_mean,
        "images_per_sec_median": ips_median,
        "images_per_sec_ci95_low": rate(stats.step_time_ci95_high_s),
        "images_per_sec_ci95_high": rate(stats.step_time_ci95_low_s),
        "images_per_sec_median_ci95_low": rate(stats.step_time_median_ci95_high_s),
        "images_per_sec_median_ci95_high": rate(stats.step_time_median_ci95_low_s),
        "images_per_sec_per_replica": ips_mean / replicas,
        "images_per_sec_jitter": ips_median * stats.step_time_jitter_s / stats.step_time_median_s,
        "tflops": passes * flops_per_image * ips_mean / 1e12,
    }


def ratio_ci95(a: float, a_low: float, a_high: float, b: float, b_low: float, b_high: float
               ) -> tuple[float, float, float]:
    """a / b with a 95% CI from each value's own 95% CI: on the log scale, the two relative
    half-widths are added in quadrature on each side (independent runs). NaN where a value or
    an end of its CI is missing or not positive."""
    vals = np.asarray([a, a_low, a_high, b, b_low, b_high], dtype=float)
    if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        return (a / b if np.isfinite(a) and np.isfinite(b) and b > 0 else math.nan), math.nan, math.nan
    r = a / b
    down = math.hypot(math.log(a / a_low), math.log(b_high / b))
    up = math.hypot(math.log(a_high / a), math.log(b / b_low))
    return r, r * math.exp(-down), r * math.exp(up)


# ---- across runs (--repeats: one figure per fresh process) -----------------------------------
MIN_RUNS_FOR_CI = 3  # below this a between-run interval says nothing: figures stay single-run


@dataclass(frozen=True)
class AcrossRuns:
    """The spread of one figure over the runs of a configuration: the median of the runs' values,
    its distribution-free 95% CI (`median_ci95` over the runs: below 6 runs the whole range, whose
    coverage is 1 - 2^(1-n): 75% at 3 runs, 88% at 4, 94% at 5), and the coefficient of
    variation (sample standard deviation over the mean)."""
    runs: int
    median: float
    low: float
    high: float
    cv: float


def across_runs(values: Sequence[float]) -> AcrossRuns:
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if x.size == 0:
        return AcrossRuns(0, math.nan, math.nan, math.nan, math.nan)
    low, high = median_ci95(x)
    cv = float(x.std(ddof=1) / x.mean()) if x.size > 1 and x.mean() != 0 else math.nan
    return AcrossRuns(int(x.size), float(np.median(x)), low, high, cv)


def olympic_mean(times: Sequence[float]) -> float:
    """MLPerf Training's score of several runs' times to train: drop the fastest and the slowest,
    average the rest. A run that never reached the target counts as infinitely slow (pass inf or
    NaN): one such run is dropped as the slowest; with two, the mean is NaN (too few runs reached
    the target to score). NaN below 3 runs."""
    x = np.sort(np.asarray([math.inf if v is None or not np.isfinite(v) else v for v in times], dtype=float))
    if x.size < 3:
        return math.nan
    kept = x[1:-1]
    return float(kept.mean()) if np.all(np.isfinite(kept)) else math.nan


# ---- comparing two configurations ---------------------------------------------------------
ALPHA = 0.05               # the significance level of every verdict
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0         # a fixed seed: the same files give the same report
FASTER, SLOWER, NO_DIFFERENCE, UNTESTED = "faster", "slower", "no significant difference", "untested"
ACROSS_RUNS = "Mann-Whitney U across run medians"
ACROSS_STEPS = "Welch's t across steps, ignoring between-run variance"
NO_TEST = "none (no step-time statistics)"


@dataclass(frozen=True)
class Side:
    """One configuration as measured: each run's median images/sec and, for the one-run test,
    the latest run's step-time mean, std and count and its global batch."""
    run_medians: tuple[float, ...]
    step_mean_s: float = math.nan
    step_std_s: float = math.nan
    timed_steps: int = 0
    global_batch: float = math.nan
    median_ci95: tuple[float, float] = (math.nan, math.nan)  # the latest run's median images/sec CI


@dataclass(frozen=True)
class Comparison:
    """new / old images/sec, its 95% CI, the test's p-value and what it concludes at ALPHA.
    `decisive`: the test looks across runs and its p-value can reach ALPHA at these run counts:
    only such a comparison may fail a regression gate."""
    ratio: float
    ci95_low: float
    ci95_high: float
    p_value: float
    test: str
    runs_old: int
    runs_new: int
    verdict: str
    decisive: bool

    def regression(self, threshold: float) -> bool:
        return is_regression(self.ratio, self.verdict, self.decisive, threshold)


def is_regression(ratio: float, verdict: str, decisive: bool, threshold: float) -> bool:
    """What fails a regression gate: a decisive, significant slowdown of more than `threshold`
    (0.05: new runs at under 95% of the old images/sec)."""
    return bool(decisive and verdict == SLOWER and ratio < 1.0 - threshold)


def _verdict(ratio: float, p: float) -> str:
    if not np.isfinite(p):
        return UNTESTED
    return NO_DIFFERENCE if p >= ALPHA else FASTER if ratio > 1 else SLOWER


def smallest_p(n_old: int, n_new: int) -> float:
    """The smallest two-sided p-value Mann-Whitney U can give with these counts (no ties): all
    of one side above all of the other."""
    return min(1.0, 2.0 / math.comb(n_old + n_new, n_old)) if n_old and n_new else 1.0


def _across_runs(old: np.ndarray, new: np.ndarray) -> Comparison:
    from scipy.stats import mannwhitneyu

    ratio = float(np.median(new) / np.median(old))
    p = float(mannwhitneyu(new, old, alternative="two-sided").pvalue)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    boot = (np.median(rng.choice(new, (BOOTSTRAP_RESAMPLES, new.size)), axis=1)
            / np.median(rng.choice(old, (BOOTSTRAP_RESAMPLES, old.size)), axis=1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Comparison(ratio, float(lo), float(hi), p, ACROSS_RUNS, old.size, new.size, _verdict(ratio, p),
                      decisive=smallest_p(old.size, new.size) < ALPHA)


def _per_image(s: Side) -> tuple[float, float, int] | None:
    """A run's mean and std of seconds per image, and its step count; None without them."""
    vals = (s.step_mean_s, s.step_std_s, s.global_batch)
    if not all(np.isfinite(vals)) or s.step_mean_s <= 0 or s.global_batch <= 0 or s.timed_steps < 2:
        return None
    return s.step_mean_s / s.global_batch, s.step_std_s / s.global_batch, int(s.timed_steps)


def _across_steps(old: Side, new: Side) -> Comparison:
    """The latest runs' medians, their ratio's CI from each median's own CI, and Welch's t-test on
    their mean seconds per image; untested where a run lacks step statistics."""
    r, lo, hi = ratio_ci95(new.run_medians[-1], *new.median_ci95, old.run_medians[-1], *old.median_ci95)
    a, b = _per_image(old), _per_image(new)
    if a is None or b is None:
        return Comparison(r, lo, hi, math.nan, NO_TEST, len(old.run_medians), len(new.run_medians), UNTESTED, False)
    from scipy.stats import ttest_ind_from_stats

    (ma, sa, na), (mb, sb, nb) = a, b
    if sa == 0 and sb == 0:  # no spread: the t statistic is undefined, the answer is not
        p = 1.0 if ma == mb else 0.0
    else:
        p = float(ttest_ind_from_stats(mb, sb, nb, ma, sa, na, equal_var=False).pvalue)
    # the direction is the test's: fewer seconds per image on average is faster
    return Comparison(r, lo, hi, p, ACROSS_STEPS, len(old.run_medians), len(new.run_medians),
                      _verdict(ma / mb, p), decisive=False)


def compare_runs(old: Side, new: Side) -> Comparison:
    """Whether `new` is faster or slower than `old`. With at least 2 runs on each side: a
    Mann-Whitney U test across run medians and a seeded bootstrap CI of the ratio of their
    medians. With fewer: the latest runs' ratio of medians with a CI from their own CIs, and
    Welch's t-test across their step times from their mean, std and count, per image (so that
    global batches may differ); it ignores between-run variance, which is often the larger.
    Without step statistics: the same ratio and CI, untested."""
    o = np.asarray([x for x in old.run_medians if np.isfinite(x) and x > 0], dtype=float)
    n = np.asarray([x for x in new.run_medians if np.isfinite(x) and x > 0], dtype=float)
    if o.size >= 2 and n.size >= 2:
        return _across_runs(o, n)
    return _across_steps(old, new)
