"""Statistics against hand-computed values."""
import math

import numpy as np
import pytest

from bench.measure.stats import (
    ci95_halfwidth,
    jitter,
    median_ci95,
    slowest_rank_per_step,
    step_stats,
    throughput,
)

TIMES = [0.10, 0.12, 0.11, 0.13, 0.09]  # mean 0.11, median 0.11


def test_step_stats_by_hand():
    s = step_stats(TIMES)
    assert s.timed_steps == 5
    assert s.step_time_mean_s == pytest.approx(0.11)
    assert s.step_time_median_s == pytest.approx(0.11)
    assert s.step_time_min_s == pytest.approx(0.09) and s.step_time_max_s == pytest.approx(0.13)
    # sample std: sqrt(sum(d^2)/(n-1)) = sqrt((1+1+0+4+4)e-4 / 4) = sqrt(2.5e-4)
    assert s.step_time_std_s == pytest.approx(math.sqrt(2.5e-4))
    # p90 with linear interpolation: sorted .09 .10 .11 .12 .13, rank 0.9*4 = 3.6 -> .12 + .6*.01
    assert s.step_time_p90_s == pytest.approx(0.126)
    # 95% CI: t(0.975, 4) = 2.7764451
    half = 2.7764451 * math.sqrt(2.5e-4) / math.sqrt(5)
    assert s.step_time_ci95_low_s == pytest.approx(0.11 - half, rel=1e-6)
    assert s.step_time_ci95_high_s == pytest.approx(0.11 + half, rel=1e-6)
    # jitter: |d| from median = .01 .01 0 .02 .02 -> MAD .01 -> 1.4826 * .01
    assert s.step_time_jitter_s == pytest.approx(0.014826)


def test_ci_of_a_single_value_is_undefined():
    assert math.isnan(ci95_halfwidth([1.0]))
    assert jitter([1.0, 1.0, 1.0]) == 0.0


def test_throughput_by_hand():
    s = step_stats(TIMES)
    t = throughput(s, global_batch=64, replicas=2, flops_per_image=1e9)
    assert t["images_per_sec"] == pytest.approx(64 / 0.11)
    assert t["images_per_sec_median"] == pytest.approx(64 / 0.11)
    assert t["images_per_sec_per_replica"] == pytest.approx(32 / 0.11)
    assert t["images_per_sec_ci95_low"] == pytest.approx(64 / s.step_time_ci95_high_s)
    assert t["images_per_sec_ci95_high"] == pytest.approx(64 / s.step_time_ci95_low_s)
    # training ~ 3x forward FLOPs
    assert t["tflops"] == pytest.approx(3 * 1e9 * 64 / 0.11 / 1e12)


def test_every_rank_counts_the_slowest_per_step():
    per_rank = [[0.1, 0.3, 0.1], [0.2, 0.1, 0.1]]
    np.testing.assert_allclose(slowest_rank_per_step(per_rank), [0.2, 0.3, 0.1])
    s = step_stats(slowest_rank_per_step(per_rank))
    assert s.step_time_mean_s == pytest.approx(0.2)  # not rank 0's 0.1667


def test_median_ci_from_order_statistics_by_hand():
    # n = 10: Binomial(10, 1/2) 2.5% quantile is 2 -> ranks 2 and 9 (1-based): x(2) = 2, x(9) = 9
    assert median_ci95(list(range(10, 0, -1))) == (2.0, 9.0)
    # n = 20: quantiles 6 and 14 -> x(6) = 6, x(15) = 15
    assert median_ci95(list(range(1, 21))) == (6.0, 15.0)
    assert median_ci95([3.0, 1.0, 2.0]) == (1.0, 3.0)  # few values: the whole range
    s = step_stats(list(range(1, 21)))
    assert (s.step_time_median_ci95_low_s, s.step_time_median_ci95_high_s) == (6.0, 15.0)
    t = throughput(s, global_batch=30, replicas=1, flops_per_image=1.0)
    assert t["images_per_sec_median_ci95_low"] == pytest.approx(30 / 15.0)
    assert t["images_per_sec_median_ci95_high"] == pytest.approx(30 / 6.0)


def test_wait_clock_times_the_wait_for_each_batch_apart():
    import time

    from bench.measure.timing import WaitClock, run_steps

    def slow_batches():
        while True:
            time.sleep(0.02)  # an input pipeline that cannot keep up
            yield 1.0

    clock = WaitClock()
    feed = clock.wrap(slow_batches())
    timing = run_steps(lambda: (next(feed), 0.0), warmup=1, timed=5, global_batch=1, data_wait=clock)
    assert len(timing.data_waits) == 5
    assert all(0.018 <= w <= s for w, s in zip(timing.data_waits, timing.step_times))


class _Dispatched:
    """A step's result that is ready `delay` seconds after its dispatch, and only after the step
    dispatched before it (one device queue): fetching it (float) waits, as a JAX array does."""
    queue_free = 0.0

    def __init__(self, log: list, k: int, delay: float):
        import time

        start = max(time.perf_counter(), _Dispatched.queue_free)
        self.ready = _Dispatched.queue_free = start + delay
        self.log, self.k = log, k
        log.append(("dispatch", k))

    def __float__(self) -> float:
        import time

        time.sleep(max(0.0, self.ready - time.perf_counter()))
        self.log.append(("wait", self.k))
        return 1.0


def test_pipelined_timing_dispatches_the_next_step_before_waiting_and_its_intervals_add_up():
    import time

    from bench.measure.timing import run_steps

    log: list = []
    count = iter(range(100))
    _Dispatched.queue_free = 0.0
    t0 = time.perf_counter()
    timing = run_steps(lambda: (_Dispatched(log, next(count), 0.01), 0.0), warmup=1, timed=6, global_batch=4,
                       pipelined=True)
    wall = time.perf_counter() - t0
    timed = log[4:]  # compile and warmup steps: dispatched and waited for in turn
    assert log[:4] == [("dispatch", 0), ("wait", 0), ("dispatch", 1), ("wait", 1)]
    # step k+1 is queued before the host waits for step k; no step is dispatched beyond the last
    assert timed[:3] == [("dispatch", 2), ("dispatch", 3), ("wait", 2)]
    assert [e for e in timed if e[0] == "dispatch"] == [("dispatch", k) for k in range(2, 8)]
    assert timed[-1] == ("wait", 7) and len(timing.step_times) == 6 and timing.images == 24
    # the intervals hold the device's 6 x 10 ms and add up to no more than the timed part; single
    # intervals are left unchecked, since a loaded host can wait late for one step and early for the next
    assert 6 * 0.01 * 0.95 <= sum(timing.step_times) <= wall


def test_synchronous_timing_waits_for_each_step_before_the_next():
    from bench.measure.timing import run_steps

    log: list = []
    count = iter(range(100))
    _Dispatched.queue_free = 0.0
    run_steps(lambda: (_Dispatched(log, next(count), 0.001), 0.0), warmup=0, timed=3, global_batch=1)
    assert log == [(kind, k) for k in range(4) for kind in ("dispatch", "wait")]


@pytest.mark.parametrize("op,kind", [
    ("cudnn-conv-bw-filter.26", "convolution"), ("conv_general_dilated.59", "convolution"),
    ("_MklNativeConv2DBackpropInput gradient_tape/x/Conv2DBackpropInput", "convolution"),
    ("loop_convert_fusion_1", "other fusion"),  # "convert" is no convolution
    ("all-reduce.3", "collective"), ("loop_reduce_window_fusion", "pooling"), ("input_reduce_fusion_10", "reduction"),
    ("input_scatter_fusion", "scatter/gather"), ("transpose_copy_fusion.19", "copy/transpose"),
    ("cublas-gemm.1", "matmul"), ("wrapped_iota", "other")])
def test_trace_ops_are_sorted_into_kinds_by_their_names(op, kind):
    from bench.measure.traces import kind_of

    assert kind_of(op) == kind


def test_a_ratio_ci_adds_both_relative_half_widths_in_quadrature():
    from bench.measure.stats import ratio_ci95

    r, lo, hi = ratio_ci95(400, 390, 410, 200, 195, 205)
    assert r == 2.0
    assert lo == pytest.approx(2 * math.exp(-math.hypot(math.log(400 / 390), math.log(205 / 200))))
    assert hi == pytest.approx(2 * math.exp(math.hypot(math.log(410 / 400), math.log(200 / 195))))
    # an exact denominator leaves the numerator's own relative CI
    assert ratio_ci95(400, 380, 440, 200, 200, 200)[1:] == pytest.approx((1.9, 2.2))
    assert all(math.isnan(x) for x in ratio_ci95(400, float("nan"), 410, 200, 195, 205)[1:])
    assert math.isnan(ratio_ci95(400, 390, 410, 0, 0, 0)[0])


class _TwoRanks:
    """A distribution of two ranks whose second is 1.5 times slower at everything; counts its gathers."""
    num_replicas = 2

    def __init__(self):
        self.gathers = 0

    def gather(self, values):
        self.gathers += 1
        v = np.asarray(values, dtype=float)
        return np.stack([v, 1.5 * v])


def test_aggregate_takes_the_slowest_rank_per_step_and_the_largest_of_the_rest():
    from bench.measure.timing import Timing
    from bench.runner.aggregate import aggregate

    dist = _TwoRanks()
    timing = Timing(compile_s=2.0, step_times=TIMES, losses=[3.0, 2.5], correct=6, images=8,
                    data_waits=[0.01, 0.03], peak_mem_bytes=1000, mem_source="rss", process_peak_mem_bytes=4000)
    m = aggregate(timing, dist, mode="train", global_batch=16, flops_per_image=1e9, accuracy_mode=True)
    slowest = [1.5 * t for t in TIMES]
    assert m.steps["step_time_median_s"] == pytest.approx(np.median(slowest))
    assert m.steps["images_per_sec"] == pytest.approx(16 / np.mean(slowest))
    assert m.steps["tflops"] == pytest.approx(3 * 1e9 * 16 / np.mean(slowest) / 1e12)  # training: three passes
    assert m.rank_step_time_means_s == pytest.approx((0.11, 0.165))
    assert (m.compile_s, m.peak_mem_bytes, m.process_peak_mem_bytes) == (3.0, 1500, 6000)
    assert m.data_wait_ms == pytest.approx(1000 * 1.5 * 0.02)
    assert (m.final_loss, m.train_accuracy) == (2.5, 0.75)
    assert dist.gathers == 2  # the step times, then every scalar at once

    bare = aggregate(Timing(compile_s=1.0, step_times=TIMES, losses=[1.0]), dist, mode="inference",
                     global_batch=16, flops_per_image=1e9)
    assert (bare.peak_mem_bytes, bare.process_peak_mem_bytes, bare.data_wait_ms, bare.final_loss) == (None,) * 4
    cols = bare.columns()
    assert "peak_mem_bytes" not in cols and "data_wait_ms" not in cols
    assert cols["rank_step_time_means_s"] == "0.11;0.165"


@pytest.mark.parametrize("n", [2, 3, 6, 7, 10, 11, 50, 51, 99, 100, 1000, 10001])
def test_the_intervals_quantiles_are_scipy_stats(n):
    """stats.py takes them from scipy.special (scipy.stats costs every run 0.6 s to import)."""
    from scipy.stats import binom
    from scipy.stats import t as student

    x = np.arange(n, dtype=float)
    assert ci95_halfwidth(x) == pytest.approx(student.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n), rel=1e-12)
    if n >= 6:
        lo, hi = int(binom.ppf(0.025, n, 0.5)), int(binom.ppf(0.975, n, 0.5))
        assert median_ci95(x[::-1]) == (x[max(lo - 1, 0)], x[min(hi, n - 1)])


# ---- the warmup found (MSER-5) and the CI target (bench.measure.steady) ----------------------------
def _noisy(n: int, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return level * (1 + 0.02 * np.random.default_rng(seed).standard_normal(n))


def test_mser5_drops_a_decaying_transient():
    from bench.measure.steady import mser5, warmup_truncation

    x = _noisy(100)
    x[:20] += 0.1 * np.exp(-np.arange(20) / 4)  # 2x slower at first, settled within ~20 steps
    d = mser5(x)
    assert 10 <= d <= 25 and d % 5 == 0
    assert warmup_truncation(x) == (d, "mser5")


def test_mser5_drops_nothing_from_a_flat_series_and_the_minimum_applies():
    from bench.config.schema import MIN_WARMUP
    from bench.measure.steady import mser5, warmup_truncation

    x = _noisy(100)
    assert mser5(x) <= 5
    assert warmup_truncation(np.full(60, 0.1)) == (MIN_WARMUP, "mser5")
    assert mser5([0.3, 0.1, 0.1]) == 0  # under 2 batches: nothing to judge
    assert mser5([0.3] * 5 + [0.1] * 5) == 0  # a lone batch left would have no spread: never chosen


def test_the_maximum_bounds_the_warmup_and_says_so():
    from bench.measure.steady import mser5, warmup_truncation

    x = _noisy(200)
    x[:80] += 0.2  # a level shift lasting 80 steps: drift, not warmup
    assert 80 <= mser5(x) <= 100
    assert warmup_truncation(x, hi=50) == (50, "mser5-max")
    assert mser5(np.r_[np.full(90, 0.3), np.full(10, 0.1)]) <= 50  # the second half is never searched


def test_a_plan_stops_once_enough_steps_follow_the_warmup_and_the_ci_is_tight():
    from bench.measure.steady import Plan

    x = _noisy(300)
    x[:20] += 0.1 * np.exp(-np.arange(20) / 4)
    plan = Plan(50, find=True)
    assert plan.cap == 100 and not plan.decide(x[:51], ahead=1).stop  # the warmup found leaves too few
    done = plan.decide(x[:100])
    assert done.stop and done.rule == "mser5" and 100 - done.dropped >= 50
    tight = Plan(20, target_ci=0.001, max_steps=200)  # the CI of 2% noise needs many steps for 0.1%
    assert tight.cap == 200 and not tight.decide(x[100:160]).stop
    assert tight.decide(x[100:300]).stop  # the cap
    assert Plan(20, find=True, target_ci=0.001, max_steps=30).decide(x[:55]).stop  # 30 or more kept: the limit
    loose = Plan(20, target_ci=0.5, max_steps=200)
    d = loose.decide(x[100:120])
    assert d.stop and d.dropped == 0 and d.rule == "fixed" and d.ci_rel <= 0.5


def test_a_stopping_decision_never_keeps_more_than_the_limit_when_the_warmup_found_shrinks():
    """Between two decisions MSER-5 may find a shorter warmup on the longer series, so the steps
    after it can outnumber --max-steps (a multiworker run kept 28 of a limit of 25): the extra
    leading steps are dropped too, and exactly the limit is kept."""
    from bench.measure.steady import Plan

    plan = Plan(10, find=True, target_ci=0.001, max_steps=25)
    x = _noisy(40)
    kept = []
    for n in range(26, 41):
        d = plan.decide(x[:n - 1], ahead=1)
        assert n - d.dropped <= 25, (n, d)
        if d.stop:
            kept.append(n - d.dropped)
    assert kept and set(kept) == {25}  # a flat series stops within these steps, keeping exactly the limit


def test_median_ci_rel_is_half_the_median_ci_over_the_median():
    from bench.measure.stats import median_ci_rel

    x = list(range(1, 21))
    lo, hi = median_ci95(x)
    assert median_ci_rel(x) == pytest.approx((hi - lo) / 2 / 10.5)
    assert math.isnan(median_ci_rel([]))


def test_an_adaptive_plan_times_until_it_stops_and_drops_the_warmup_it_found():
    """A synthetic step whose first 8 steps after the compile step are slow: run_steps with a found
    warmup keeps them out, pipelined (one step in flight) or not, and gathers at each decision."""
    from bench.measure.steady import Plan
    from bench.measure.timing import run_steps

    for pipelined in (False, True):
        count = iter(range(1000))
        gathered: list[int] = []

        def gather(values):
            gathered.append(len(values))
            return np.asarray(values, dtype=float)[None, :]

        def step():
            k = next(count)
            import time
            time.sleep(0.008 if 1 <= k <= 8 else 0.001)
            return 0.5, 1.0

        t = run_steps(step, warmup=0, timed=20, global_batch=2, plan=Plan(20, find=True), gather=gather,
                      pipelined=pipelined)
        assert t.warmup_rule == "mser5" and t.warmup_dropped >= 10  # the slow steps' batches
        assert len(t.step_times) >= 20 and t.images == 2 * len(t.step_times)
        assert t.timed_run == len(t.step_times) + t.warmup_dropped
        assert len(gathered) <= t.timed_run // 5 + 2  # decisions every 5 steps, and the last at the end


def test_a_decision_with_a_step_under_way_holds_whatever_that_step_takes():
    """Pipelined, the judge stops with one step still running: the CI must be tight for any time
    that step may take, or the row could keep a CI wider than the target."""
    from bench.measure.steady import Plan

    x = list(_noisy(40))
    plan = Plan(10, target_ci=0.02, max_steps=100)
    for ahead in (0, 1):
        for n in range(10, 40):
            if plan.decide(x[:n], ahead).stop:
                for extra in ([0.0], [1e-9], [0.1], [10.0]):
                    assert Plan(10, target_ci=0.02).decide(x[:n] + extra[:ahead]).ci_rel <= 0.02
