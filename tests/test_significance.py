"""Significance in every comparison: bench.measure.stats.compare_runs on seeded samples, the
report's --compare and its regression gate on hand-made files, the findings' test, and one
compare of two real runs end to end."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from bench.config.schema import RunConfig
from bench.measure.stats import (
    ACROSS_RUNS,
    ACROSS_STEPS,
    FASTER,
    NO_DIFFERENCE,
    SLOWER,
    UNTESTED,
    Side,
    compare_runs,
    smallest_p,
)
from bench.report.findings import family_ratios
from bench.report.tables import compare
from bench.results.columns import COLUMNS
from bench.results.row import Outcome, Topology, build_row


def _medians(center, n=5, seed=0, spread=0.02):
    """`n` run medians of images/sec around `center`, 2% run-to-run noise, seeded."""
    return tuple(center * (1 + spread * np.random.default_rng(seed).standard_normal(n)))


# ---- the test itself ------------------------------------------------------------------------
def test_a_a_across_runs_finds_no_difference():
    # many seeded A/A pairs: "no significant difference" for nearly all, as a 5% test should
    verdicts = [compare_runs(Side(_medians(100, seed=s)), Side(_medians(100, seed=1000 + s))) for s in range(40)]
    assert sum(c.verdict == NO_DIFFERENCE for c in verdicts) >= 36
    c = verdicts[0]
    assert c.test == ACROSS_RUNS and (c.runs_old, c.runs_new) == (5, 5) and c.decisive
    assert c.verdict == NO_DIFFERENCE and c.p_value >= 0.05 and c.ci95_low < 1 < c.ci95_high


def test_a_b_across_runs_finds_a_20_percent_slowdown():
    c = compare_runs(Side(_medians(100, seed=1)), Side(_medians(80, seed=2)))
    assert c.verdict == SLOWER and c.p_value < 0.05 and c.test == ACROSS_RUNS
    assert c.ratio == pytest.approx(0.8, rel=0.05) and c.ci95_low < c.ratio < c.ci95_high < 1
    assert c.regression(0.05) and not c.regression(0.25)  # 20% slower: beyond 5%, within 25%
    up = compare_runs(Side(_medians(80, seed=2)), Side(_medians(100, seed=1)))
    assert up.verdict == FASTER and not up.regression(0.05)


def test_the_bootstrap_is_seeded():
    old, new = Side(_medians(100, seed=3)), Side(_medians(90, seed=4))
    assert compare_runs(old, new) == compare_runs(old, new)


def test_too_few_runs_cannot_decide():
    # all 3 new runs below all 3 old: Mann-Whitney's smallest two-sided p is 2/20, never under 5%
    c = compare_runs(Side((100.0, 101.0, 102.0)), Side((80.0, 81.0, 82.0)))
    assert c.test == ACROSS_RUNS and c.p_value == pytest.approx(0.1) and c.verdict == NO_DIFFERENCE
    assert not c.decisive and not c.regression(0.05)
    assert smallest_p(3, 3) == pytest.approx(0.1) and smallest_p(4, 4) < 0.05 and smallest_p(2, 7) > 0.05


def _one_run(ips, batch=32, std_frac=0.05, steps=50):
    step = batch / ips
    return Side((ips,), step_mean_s=step, step_std_s=std_frac * step, timed_steps=steps, global_batch=batch,
                median_ci95=(0.98 * ips, 1.02 * ips))


def test_one_run_each_uses_welch_across_steps_and_says_so():
    c = compare_runs(_one_run(100.0), _one_run(80.0))
    assert c.test == ACROSS_STEPS and "ignoring between-run variance" in c.test
    assert (c.runs_old, c.runs_new) == (1, 1) and c.verdict == SLOWER and c.p_value < 0.05
    assert c.ratio == pytest.approx(0.8) and c.ci95_low < 0.8 < c.ci95_high  # the medians' ratio, from their CIs
    assert not c.decisive and not c.regression(0.05)  # within-run evidence alone never fails a gate
    same = compare_runs(_one_run(100.0), _one_run(100.0))
    assert same.verdict == NO_DIFFERENCE and same.p_value == pytest.approx(1.0)
    # per image: twice the batch in twice the time is the same images/sec
    assert compare_runs(_one_run(100.0), _one_run(100.0, batch=64)).ratio == pytest.approx(1.0)


def test_rows_without_step_statistics_are_untested():
    c = compare_runs(Side((100.0,), median_ci95=(95.0, 105.0)), Side((50.0,), median_ci95=(48.0, 52.0)))
    assert c.verdict == UNTESTED and np.isnan(c.p_value) and c.ratio == pytest.approx(0.5)
    assert c.ci95_low < 0.5 < c.ci95_high and not c.decisive


# ---- hand-made result files -------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_row():
    row = build_row(RunConfig(model="vgg11", batch_size=8).resolved(has_gpu=False), Outcome("ok"),
                    topology=Topology(1, 1, 8, 8))
    return {**dict.fromkeys(COLUMNS), **row}  # every column, as a loaded file has


def _rows(base, medians, group=None, day=1, **cells):
    """One row per run median, the run's step statistics to match (5% spread over 50 steps)."""
    out = []
    for i, ips in enumerate(medians):
        step = base["global_batch"] / ips
        out.append({**base, "timestamp_utc": f"2026-01-{day:02d}T00:00:{i:02d}Z", "images_per_sec_median": ips,
                    "images_per_sec_median_ci95_low": 0.98 * ips, "images_per_sec_median_ci95_high": 1.02 * ips,
                    "step_time_median_s": step, "step_time_mean_s": step, "step_time_std_s": 0.05 * step,
                    "timed_steps": 50, "repeat_index": i if group else None, "repeat_group": group, **cells})
    return out


def _csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def _gate(old, new, *extra):
    return subprocess.run([sys.executable, "-m", "bench.report", "--compare", old, new, *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_compare_with_repeats_tests_across_run_medians(base_row):
    old = pd.DataFrame(_rows(base_row, _medians(100, seed=1), group="a"))
    new = pd.DataFrame(_rows(base_row, _medians(80, seed=2), group="b", day=2))
    (row,) = compare(old, new).to_dict("records")
    assert row["test"] == ACROSS_RUNS and row["runs"] == "5 vs 5" and row["verdict"] == SLOWER
    assert row["p_value"] < 0.05 and row["ratio"] == pytest.approx(0.8, rel=0.05) and row["decisive"]
    assert row["images_per_sec_old"] == pytest.approx(np.median(_medians(100, seed=1)))
    # without a repeat_group, the latest row alone stands for its configuration
    plain = pd.DataFrame(_rows(base_row, _medians(100, seed=1)))
    (row,) = compare(plain, new).to_dict("records")
    assert row["test"] == ACROSS_STEPS and row["runs"] == "1 vs 5"


def test_fail_on_regression_fails_only_on_a_decided_regression_above_the_threshold(base_row, tmp_path):
    old = _csv(tmp_path / "old.csv", _rows(base_row, _medians(100, seed=1), group="a"))
    slow = _csv(tmp_path / "slow.csv", _rows(base_row, _medians(80, seed=2), group="b", day=2))
    same = _csv(tmp_path / "same.csv", _rows(base_row, _medians(100, seed=3), group="c", day=2))
    r = _gate(old, slow, "--fail-on-regression")
    assert r.returncode == 1 and "1 regression(s)" in r.stdout and "| slower |" in r.stdout, r.stdout + r.stderr
    assert "| 0.008 | Mann-Whitney U across run medians | 5 vs 5 |" in r.stdout  # 2/252: all 5 below all 5
    assert _gate(old, slow).returncode == 0  # without the gate, a report
    assert _gate(old, slow, "--fail-on-regression", "--threshold", "0.3").returncode == 0  # 20% is within 30%
    r = _gate(old, same, "--fail-on-regression")
    assert r.returncode == 0 and "no significant difference" in r.stdout
    # one run each: the t-test says slower, but it cannot decide a gate, and the gate says so
    one_old = _csv(tmp_path / "one_old.csv", _rows(base_row, (100.0,)))
    one_slow = _csv(tmp_path / "one_slow.csv", _rows(base_row, (80.0,), day=2))
    r = _gate(one_old, one_slow, "--fail-on-regression")
    assert r.returncode == 0 and "| slower |" in r.stdout and "ignoring between-run variance" in r.stdout
    assert "without enough runs to decide" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("extra", [["--threshold", "1"], ["--threshold", "-0.1"], ["--threshold", "nan"]])
def test_bad_threshold_is_one_line_exit_2(base_row, tmp_path, extra):
    old = _csv(tmp_path / "old.csv", _rows(base_row, (100.0,)))
    r = _gate(old, old, "--fail-on-regression", *extra)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "threshold" in r.stderr and not r.stdout


def test_no_common_configuration_is_one_line_exit_2(base_row, tmp_path):
    old = _csv(tmp_path / "old.csv", _rows(base_row, (100.0,)))
    other = _csv(tmp_path / "other.csv", _rows({**base_row, "model": "resnet18"}, (100.0,)))
    for extra in ([], ["--fail-on-regression"]):
        r = _gate(old, other, *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nothing to compare" in r.stderr, r.stderr


def test_findings_test_the_family_ratio_across_runs(base_row):
    vgg = _rows(base_row, _medians(300, seed=5), group="v", gflops_per_image=1.0)
    resnet = _rows({**base_row, "model": "resnet18"}, _medians(100, seed=6), group="r", gflops_per_image=1.0)
    (f,) = family_ratios(pd.DataFrame(vgg + resnet))
    assert "faster than resnet18 at 5%: p = 0.008, Mann-Whitney U across run medians, 5 vs 5 runs" in f.text, f.text


# ---- real runs ----------------------------------------------------------------------------
def test_two_real_runs_compare_end_to_end(tmp_path):
    """Two tiny real runs of one configuration (A/A), one row each: the t-test across steps."""
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    for out in (old, new):
        r = subprocess.run([sys.executable, "bench/run.py", "lenet5", "--width", "0.25", "--steps", "5",
                            "--warmup-steps", "1", "--batch-size", "8", "--output", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    r = _gate(str(old), str(new), "--fail-on-regression")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "| lenet5 |" in r.stdout and ACROSS_STEPS in r.stdout and "| 1 vs 1 |" in r.stdout
    assert "1 configuration(s) in both" in r.stdout
