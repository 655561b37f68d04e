"""The scaling model against measurement, as a benchmark (how close a prediction comes is a
measurement of a noisy machine, never a unit test): scripts/network.sh measures collective rows and
training with and without gradient sync across two emulated hosts (one core each) at 100 Mbit/s,
1 Gbit/s and unshaped links, for resnet18 and vgg13 at width 0.5 under Horovod and multiworker;
every synced run, predicted from its unsynced twin and the collective rows of its place, must lie in
its predicted band, and the band's midpoint within 25% of it.

    sudo .venv/bin/python -m pytest --benchmark tests/benchmarks/test_prediction.py --benchmark-network new -s
    .venv/bin/python -m pytest --benchmark tests/benchmarks/test_prediction.py --benchmark-network DIR
The first measures (as root, ~11 min); the second validates the rows network.sh left in DIR.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import REPO
from bench.predict.validate import validation_table
from bench.report.render import markdown_table
from bench.results.load import apart, load_results
from tests.helpers import HOSTS_LOCK, require

MIDPOINT_WITHIN = 0.25


def _network_rows(config, tmp_path):
    given = config.getoption("--benchmark-network")
    if given is None:
        pytest.skip("needs --benchmark-network new (measure, as root, ~11 min) or --benchmark-network DIR")
    if given != "new":
        return given
    require("root", "ip", "tc")
    if not Path(sys.executable).with_name("horovodrun").exists():
        pytest.skip(f"needs horovodrun beside {sys.executable} (`bash scripts/setup.sh` builds Horovod)")
    out = tmp_path / "network"
    with open(HOSTS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # emulated hosts are machine-wide
        r = subprocess.run(["bash", str(REPO / "scripts" / "network.sh"), str(out)], cwd=REPO, capture_output=True,
                           text=True, timeout=3600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    return str(out)


def test_measured_steps_lie_in_their_predicted_bands(pytestconfig, tmp_path):
    folder = _network_rows(pytestconfig, tmp_path)
    df = load_results([os.path.join(folder, "runs.csv"), os.path.join(folder, "collectives.csv")])
    table, skipped = validation_table(df, apart(df, "collectives"))
    print("\n" + markdown_table(table, ".3g"))
    for s in skipped:
        print("not predicted:", s)
    assert len(table) >= 12 and not skipped
    outside = table[table["inside"] != "yes"]
    far = table[table["midpoint_error"].abs() > MIDPOINT_WITHIN]
    assert outside.empty, f"outside the band:\n{outside.to_string()}"
    assert far.empty, f"midpoint more than {MIDPOINT_WITHIN:.0%} off:\n{far.to_string()}"
