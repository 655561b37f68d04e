"""--mllog: MLPerf's training log of an accuracy-mode run, checked by MLPerf's own compliance
checker (mlperf-logging). Bad paths are in the bad-input corpus (tests/test_bad_input.py)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import run_cli

from bench.results.mllog import PREFIX, RULESET, RunLog, append_log, split_runs

# What the closed division's image-classification rules ask that cnnbench's runs cannot give
# (docs/measuring.md, "MLPerf log"): the checker's complaints on a closed copy of an SGD run's log
# name these keys and no others
CLOSED_ONLY = {"sgd_opt_end_learning_rate", "sgd_opt_learning_rate_decay_poly_power",
               "sgd_opt_learning_rate_decay_steps", "model_bn_span", "sgd_opt_weight_decay", "eval_accuracy"}
RUN = ["lenet5", "--data", "digits", "--epochs", "2", "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.05",
       "--weight-decay", "5e-4", "--no-progress"]


def _records(text: str) -> list[dict]:
    return [json.loads(line[len(PREFIX):]) for line in text.splitlines()]


def _checker(path, tmp_path) -> subprocess.CompletedProcess:
    """MLPerf's compliance checker, as its docs run it, on one run's log."""
    return subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
                           "--ruleset", RULESET, "--log_output", str(tmp_path / "checker.log"), str(path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)


@pytest.mark.slow
def test_an_accuracy_run_writes_a_log_the_compliance_checker_accepts(tmp_path):
    log = tmp_path / "result_0.txt"
    r = run_cli(*RUN, "--output", str(tmp_path / "runs.csv"), "--mllog", str(log))
    assert r.returncode == 0, r.stderr[-2000:]
    recs = _records(log.read_text())
    keys = [rec["key"] for rec in recs]
    assert keys[:2] == ["cache_clear", "init_start"] and keys[-1] == "run_stop"
    assert keys.index("init_stop") < keys.index("run_start") < keys.index("epoch_start")
    assert [rec["metadata"]["epoch_num"] for rec in recs if rec["key"] == "eval_accuracy"] == [1, 2]
    value = {rec["key"]: rec["value"] for rec in recs}
    assert value["opt_name"] == "sgd" and value["sgd_opt_momentum"] == pytest.approx(0.9)
    assert value["global_batch_size"] == 64 and value["sgd_opt_base_learning_rate"] == pytest.approx(0.05)
    assert recs[-1]["metadata"]["status"] == "success"  # no target: every epoch ran
    import pandas as pd
    row = pd.read_csv(tmp_path / "runs.csv").iloc[-1]
    assert value["cnnbench_run_id"] == row["run_id"]  # the log names its row
    assert value["eval_accuracy"] == pytest.approx(row["top1"])
    checked = _checker(log, tmp_path)
    assert checked.returncode == 0 and "SUCCESS" in checked.stderr, checked.stderr[-3000:]

    # the closed division: the checker fails exactly on the rules the docs list as not applying
    closed = tmp_path / "closed.txt"
    closed.write_text(log.read_text().replace('"value": "open"', '"value": "closed"'))
    checked = _checker(closed, tmp_path)
    assert checked.returncode == 1
    named = {next(g for g in m.groups() if g) for m in re.finditer(
        r"occurrence of '(\w+)'|CHECK for '(\w+)'|Failed checks for (\w+) |executing CHECK code", checked.stderr)
        if any(m.groups())}
    assert named and named <= CLOSED_ONLY and "executing CHECK code" not in checked.stderr, checked.stderr[-3000:]

    # a second run appends whole: the first run's lines stay as they were; a missed target aborts
    before = log.read_text()
    r = run_cli(*RUN, "--epochs", "1", "--target-accuracy", "0.999", "--output", str(tmp_path / "runs.csv"),
                "--mllog", str(log))
    assert r.returncode == 0, r.stderr[-2000:]
    after = log.read_text()
    assert after.startswith(before) and after.endswith("\n")
    second = _records(after[len(before):])
    assert second[0]["key"] == "cache_clear" and second[-1]["metadata"]["status"] == "aborted"
    assert split_runs(after) == [before, after[len(before):]]
    only_second = tmp_path / "result_1.txt"
    only_second.write_text(split_runs(after)[1])
    assert _checker(only_second, tmp_path).returncode == 0


def test_without_mllog_nothing_is_recorded_and_the_package_is_not_imported():
    code = ("import sys; from bench.results.mllog import RunLog; r = RunLog(False); r.init_start(); "
            "r.run_start({'seed': 0}); r.event('eval_accuracy', 0.5, epoch_num=1); r.run_stop(True); "
            "assert r.lines == [] and 'mlperf_logging' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("bench").REPO))


def test_lines_are_appended_whole_to_an_existing_log(tmp_path):
    run = RunLog(True)
    run.init_start()
    run.run_start({"seed": 3})
    run.start("epoch_start", epoch_num=1)  # a run that failed in its first epoch
    run.run_stop(False)
    assert all(line.startswith(PREFIX) for line in run.lines)
    log = tmp_path / "run.log"
    log.write_text(run.lines[0])  # a last line without its newline: the next run starts on a line of its own
    append_log(str(log), run.lines)
    lines = log.read_text().splitlines()
    assert lines == [run.lines[0], *run.lines] and log.read_text().endswith("\n")
    assert _records(lines[-1])[0]["metadata"] | {"file": None, "lineno": None} == {
        "status": "aborted", "epoch_num": 1, "file": None, "lineno": None}
    assert not list(tmp_path.glob(".run.log.*.tmp"))


@pytest.mark.slow
def test_a_diverged_run_logs_an_aborted_run_stop_in_its_epoch(tmp_path):
    log = tmp_path / "result_0.txt"
    r = run_cli("lenet5", "--data", "digits", "--epochs", "2", "--optimizer", "sgd", "--lr", "1e6", "--no-progress",
                "--output", str(tmp_path / "runs.csv"), "--mllog", str(log))
    assert r.returncode == 1, r.stderr[-2000:]  # a row with status diverged
    stop = _records(log.read_text())[-1]
    assert stop["key"] == "run_stop" and stop["metadata"]["status"] == "aborted" and stop["metadata"]["epoch_num"] == 1
    assert "eval_accuracy" not in log.read_text()  # it diverged before its first evaluation
