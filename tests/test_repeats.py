"""--repeats: one configuration in N fresh processes (the sweep interleaves them, bench/run.py
starts its own), resume by repeat index, a killed repeat as a failed row, and the report's
between-run figures (hand-made frames, then real rows)."""
from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from bench.measure.stats import across_runs, olympic_mean
from bench.report import findings, tables
from bench.report.render import build_report
from bench.results.load import load_results
from bench.results.store import read_rows

PY = sys.executable
TINY = ["--width", "0.25", "--steps", "3", "--warmup-steps", "1", "--no-progress"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *args], cwd=REPO, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def _rows(path) -> pd.DataFrame:
    return read_rows(str(path)).sort_values("timestamp_utc", kind="stable").reset_index(drop=True)


# ---- pure: statistics and the report on hand-made frames ------------------------------------
def test_across_runs_and_the_olympic_mean():
    a = across_runs([100.0, 110.0, 90.0, math.nan])
    assert (a.runs, a.median, a.low, a.high) == (3, 100.0, 90.0, 110.0)  # below 6 runs: the whole range
    assert a.cv == pytest.approx(10.0 / 100.0)
    assert olympic_mean([10.0, 12.0, 11.0, 30.0, 9.0]) == pytest.approx(11.0)  # 9 and 30 dropped
    assert olympic_mean([10.0, 12.0, math.inf]) == 12.0  # the missed run is the slowest, dropped
    assert math.isnan(olympic_mean([10.0, math.inf, math.inf]))  # two missed: no score
    assert math.isnan(olympic_mean([10.0, 12.0]))  # needs 3 runs


def _row(i: int, ips: float, *, half: float, group: str = "", index: int | None = None, repeats: int = 1,
         status: str = "ok", batch: int = 32, **extra) -> dict:
    return {"timestamp_utc": pd.Timestamp("2026-12-01") + pd.Timedelta(minutes=i), "run_id": f"r{i}",
            "status": status, "model": "resnet18", "batch_size": batch, "strategy": "single", "replicas": 1,
            "workers": 1, "backend": "tensorflow", "mode": "train", "data": "synthetic", "gradient_sync": True,
            "images_per_sec_median": ips if status == "ok" else np.nan,
            "images_per_sec_median_ci95_low": ips - half if status == "ok" else np.nan,
            "images_per_sec_median_ci95_high": ips + half if status == "ok" else np.nan,
            "step_time_median_s": 32.0 / ips if status == "ok" else np.nan,
            "repeats": repeats, "repeat_index": index, "repeat_group": group, **extra}


@pytest.fixture
def repeated() -> pd.DataFrame:
    """One configuration: an old plain run, then a group of 5 (one failed) whose runs are each
    tight (±1%) but far apart; another configuration with a group of 2."""
    rows = [_row(0, 50.0, half=1.0)]
    rows += [_row(1 + i, ips, half=0.01 * ips, group="g1", index=i, repeats=5, status=st)
             for i, (ips, st) in enumerate([(100.0, "ok"), (130.0, "ok"), (0.0, "failed"), (90.0, "ok"), (110.0, "ok")])]
    rows += [_row(10 + i, 200.0 + i, half=20.0, group="g2", index=i, repeats=2, batch=64) for i in range(2)]
    return pd.DataFrame(rows)


def test_latest_ok_aggregates_a_group_of_three_or_more(repeated):
    ok = tables.latest_ok(repeated).set_index("batch_size")
    r = ok.loc[32]
    assert (r["runs"], r["runs_failed"]) == (4, 1)
    assert r["images_per_sec_median"] == pytest.approx(105.0)  # the median of 100, 130, 90, 110, not the last run
    assert (r["images_per_sec_median_ci95_low"], r["images_per_sec_median_ci95_high"]) == (90.0, 130.0)
    assert r["within_ci95_rel"] == pytest.approx(0.01)
    two = ok.loc[64]  # 2 ok runs: too few for a between-run CI, the latest run as it was
    assert (two["runs"], two["images_per_sec_median"], two["images_per_sec_median_ci95_low"]) == (2, 201.0, 181.0)


def test_across_runs_table_and_throughput_cell(repeated):
    t = tables.across_runs_table(repeated).set_index("batch_size")
    assert t.loc[32, "runs ok"] == 4 and t.loc[32, "runs failed"] == 1 and t.loc[32, "repeats"] == 5
    assert t.loc[32, "between-run 95% CI"] == "[90.0, 130.0]"
    assert t.loc[32, "between-run ±%"] == pytest.approx(100 * 20 / 105) and t.loc[32, "within-run ±%"] == pytest.approx(1.0)
    assert t.loc[64, "between-run 95% CI"] == "n/a (< 3 runs)" and t.loc[64, "runs ok"] == 2
    (cells,) = tables.throughput_ci_tables(repeated).values()
    assert cells.loc["resnet18", 32] == "105.0 [90.0, 130.0] (4 runs)"
    assert cells.loc["resnet18", 64] == "201.0 [181.0, 221.0]"


def test_findings_use_the_between_run_ci_and_say_when_it_exceeds_one_run(repeated):
    (f,) = findings.across_runs(repeated)
    assert "in 1 of 1 configuration(s) with 4 repeats" in f.text and "understated" in f.text
    assert "[95% CI 90.0, 130]" in f.text and "±1.0% within one run" in f.text
    (best,) = findings.best_per_model(repeated)
    assert "over 2 runs" not in best.text  # batch 64's 2 runs: a single run's figure
    tight = repeated.assign(images_per_sec_median_ci95_low=repeated["images_per_sec_median"] - 50,
                            images_per_sec_median_ci95_high=repeated["images_per_sec_median"] + 50)
    (f,) = findings.across_runs(tight)
    assert "stayed within a single run's 95% CI" in f.text
    assert findings.across_runs(repeated[repeated["repeat_group"] == ""]) == []  # no repeats, no finding


def test_time_to_train_table_olympic_mean():
    hit = [(True, 30.0), (True, 20.0), (False, np.nan), (True, 25.0), (True, 40.0)]
    rows = [_row(i, 100.0, half=1.0, group="t", index=i, repeats=5, target_accuracy=0.9, target_reached=r,
                 time_to_target_s=t) for i, (r, t) in enumerate(hit)]
    (r,) = tables.time_to_train_table(pd.DataFrame(rows)).to_dict("records")
    assert (r["runs ok"], r["reached"]) == (5, 4)
    assert r["time to target per run (s)"] == "30.0; 20.0; missed; 25.0; 40.0"
    assert r["olympic mean (s)"] == pytest.approx((25.0 + 30.0 + 40.0) / 3)  # 20 and the missed run dropped
    assert (r["fastest (s)"], r["slowest (s)"]) == (20.0, 40.0)


# ---- real processes ------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_repeats_interleave_and_resume_runs_only_the_missing(tmp_path):
    out = tmp_path / "runs.csv"
    grid = ["-m", "bench.sweep", "--no-progress", "--models", "lenet5", "--batch-sizes", "2,4", "--repeats", "2",
            *TINY[:-1], "--output", str(out)]
    r = _run(*grid)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df = _rows(out)
    assert list(df["batch_size"]) == [2, 4, 2, 4]  # A B A B, in the order they ran
    assert list(df["repeat_index"]) == [0, 0, 1, 1] and set(df["repeats"]) == {2}
    groups = df.groupby("batch_size")["repeat_group"].agg(set)
    assert all(len(g) == 1 for g in groups) and groups[2] != groups[4]
    # interrupted before the last repeat: its row is gone; resume runs that one only, in its group
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:-1]))
    dry = _run(*grid, "--dry-run")
    assert "2 configuration(s) x 2 repeats: 1 to run, 3 to skip" in dry.stdout, dry.stdout
    r = _run(*grid)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    again = _rows(out)
    assert len(again) == 4 and list(again["run_id"][:3]) == list(df["run_id"][:3])
    last = again.iloc[-1]
    assert (last["batch_size"], last["repeat_index"], last["repeat_group"]) == (4, 1, df.iloc[3]["repeat_group"])
    assert "1 to run" not in _run(*grid, "--dry-run").stdout  # done: nothing left


@pytest.fixture(scope="module")
def three_ok(tmp_path_factory):
    out = tmp_path_factory.mktemp("three") / "runs.csv"
    r = _run("bench/run.py", "lenet5", "--batch-size", "4", *TINY, "--repeats", "3", "--output", str(out))
    return out, r


@pytest.mark.slow
def test_run_repeats_writes_one_row_each_in_one_group(three_ok):
    out, r = three_ok
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df = _rows(out)
    assert len(df) == 3 and list(df["repeat_index"]) == [0, 1, 2] and df["repeat_group"].nunique() == 1
    assert set(df["status"]) == {"ok"} and set(df["repeats"]) == {3} and df["run_id"].nunique() == 3
    assert "repeats: 3 of 3 ok, 0 failed" in r.stdout and "median of 3 run medians (between-run 95% CI" in r.stdout


@pytest.mark.slow
def test_report_on_real_repeats(three_ok, tmp_path):
    out, _ = three_ok
    df = load_results([out])
    (row,) = tables.across_runs_table(df).to_dict("records")
    assert row["runs ok"] == 3 and row["runs failed"] == 0 and row["between-run 95% CI"].startswith("[")
    raw = df["images_per_sec_median"]
    assert row["images/sec (median of runs)"] == pytest.approx(raw.median())
    build_report(df, tmp_path / "report", formats=("md",))
    page = (tmp_path / "report" / "report.md").read_text()
    assert "## Across runs" in page and "over 3 runs (between-run CI)" in page


def _kill_when_started(marker: str, out: str, stop: threading.Event) -> None:
    """Crash the child whose command line holds `marker` and names `out` (surely ours) with
    SIGABRT, as a native library's abort would (SIGKILL would read as the kernel's OOM killer)."""
    while not stop.is_set():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
                if marker in cmd and out in cmd:
                    os.kill(int(pid), signal.SIGABRT)
                    return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_repeat_is_a_failed_row_and_the_others_run(tmp_path):
    out = str(tmp_path / "runs.csv")
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_started, args=("--repeat-index 1 ", out, stop), daemon=True)
    killer.start()
    try:
        r = _run("bench/run.py", "lenet5", "--batch-size", "4", *TINY, "--repeats", "3", "--output", out)
    finally:
        stop.set()
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    df = _rows(out)
    assert list(df["status"]) == ["ok", "failed", "ok"] and list(df["repeat_index"]) == [0, 1, 2]
    assert "SIGABRT" in df.iloc[1]["error"], df.iloc[1]["error"]
    assert "repeats: 2 of 3 ok, 1 failed" in r.stdout
    (row,) = tables.across_runs_table(load_results([out])).to_dict("records")
    assert (row["runs ok"], row["runs failed"]) == (2, 1)


# ---- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "1001", "-1", "two"])
@pytest.mark.parametrize("entry", ["run", "sweep"])
def test_bad_repeats_is_one_line_exit_2_nothing_written(tmp_path, entry, value):
    out = tmp_path / "runs.csv"
    cmd = (["bench/run.py", "lenet5"] if entry == "run" else
           ["-m", "bench.sweep", "--no-progress", "--models", "lenet5", "--batch-sizes", "2"])
    r = _run(*cmd, *TINY, f"--repeats={value}", "--output", str(out))
    assert r.returncode == 2 and "repeats" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists() and not (tmp_path / "logs").exists()


def test_repeats_refused_under_a_launcher_and_as_a_sweep_run_option(tmp_path):
    out = tmp_path / "runs.csv"
    env = {**ENV, "TF_CONFIG": '{"cluster":{"worker":["localhost:1","localhost:2"]},"task":{"type":"worker","index":0}}'}
    r = _run("bench/run.py", "lenet5", *TINY, "--strategy", "multiworker", "--repeats", "2", "--output", str(out),
             env=env)
    assert r.returncode == 2 and "--repeats 2" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    toml = tmp_path / "sweep.toml"
    toml.write_text('models = ["lenet5"]\nbatch_sizes = [2]\n[run]\nrepeats = 2\n')
    r = _run("-m", "bench.sweep", "--no-progress", "--config", str(toml), "--output", str(out))
    assert r.returncode == 2 and "the sweep's own" in r.stderr, r.stderr
    r = _run("-m", "bench.sweep", "--no-progress", "--models", "lenet5", "--find-max-batch", "--repeats", "2",
             "--output", str(out))
    assert r.returncode == 2 and "--find-max-batch" in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_accuracy_repeats_give_each_time_to_target_and_the_olympic_mean(tmp_path):
    out = tmp_path / "runs.csv"
    r = _run("bench/run.py", "lenet5", "--data", "digits", "--epochs", "2", "--target-accuracy", "0.2",
             "--batch-size", "64", *TINY[:2], "--no-progress", "--repeats", "3", "--output", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df = load_results([out]).sort_values("repeat_index")
    (row,) = tables.time_to_train_table(df).to_dict("records")
    hit = df["target_reached"].astype(bool)
    assert row["runs ok"] == 3 and row["reached"] == int(hit.sum())
    times = [t if h else math.inf for t, h in zip(df["time_to_target_s"], hit)]
    assert row["olympic mean (s)"] == pytest.approx(olympic_mean(times), nan_ok=True)
    assert f"{int(hit.sum())} of 3 runs reached it" in r.stdout and "olympic mean" in r.stdout
