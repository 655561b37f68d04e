"""`cnnbench predict`: the cost model's formulas, the α-β fit, the band, predictions from measured rows
(kept apart from them on load and in reports), their check against measured rows across shaped links,
and bad input. The rows in docs/measurements/2026-12-03-network were measured across two emulated
hosts at three link rates (scripts/network.sh); the live test below makes its own."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import REPO
from bench.errors import BenchInputError
from bench.predict.cli import main
from bench.predict.model import Compute, Fabric, Link, device_counts, fit_link, predict_point
from bench.predict.validate import validation_table
from bench.report.render import build_report
from bench.results.load import apart, load_results
from tests.helpers import emulated_hosts

NETWORK = REPO / "docs" / "measurements" / "2026-12-03-network"
RUNS, COLL = str(NETWORK / "runs.csv"), str(NETWORK / "collectives.csv")
H200 = str(REPO / "results" / "examples" / "gpu" / "h200.csv")
WHAT_IF = ["--batch-size", "2048", "--gpus-per-node", "8", "--intra-gbps", "7200", "--intra-latency-us", "3",
           "--link-gbps", "400", "--latency-us", "6", "--nodes", "1,2,4,8,16,32,64", "--algorithm", "ring,hierarchical"]
PY = sys.executable
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


def gbytes(gb_per_s: float) -> Link:
    """A link of `gb_per_s` GB/s (10^9 bytes/s), no latency."""
    return Link.given(8 * gb_per_s, 0.0)


def test_ring_and_hierarchical_costs_follow_the_formulas():
    one = Fabric(1, gbytes(1.0), None)
    assert one.allreduce_s(1e9, 1, "ring") == 0.0
    assert one.allreduce_s(1e9, 2, "ring") == pytest.approx(1.0)      # 2(n-1)/n = 1
    assert one.allreduce_s(1e9, 4, "ring") == pytest.approx(1.5)
    slow = Fabric(1, Link.given(8.0, 10.0), None)                       # + 2(n-1) x 10 us
    assert slow.allreduce_s(1e9, 4, "ring") == pytest.approx(1.5 + 6 * 10e-6)
    # 2 nodes of 4: ring across all 8 on the link between nodes; hierarchical within (4 devices:
    # 2 x 3/4 x S/B_intra) then across the 2 nodes (2 x 1/2 x S/B)
    nodes = Fabric(4, gbytes(1.0), gbytes(10.0))
    assert nodes.allreduce_s(1e9, 4, "ring") == pytest.approx(1.5 / 10)  # one node: the link within it
    assert nodes.allreduce_s(1e9, 8, "ring") == pytest.approx(2 * 7 / 8)
    assert nodes.allreduce_s(1e9, 8, "hierarchical") == pytest.approx(2 * 0.75 * 0.1 + 1.0)
    with pytest.raises(BenchInputError, match="do not fill"):
        nodes.allreduce_s(1e9, 6, "ring")


def test_the_fit_recovers_a_rings_latency_and_bandwidth():
    sizes = [2.0**k for k in range(10, 25)]
    times = [2 * 1 * 50e-6 + s / 1.25e9 for s in sizes]  # 2 ranks: 2(n-1) = 2 latencies, 2(n-1)/n = 1
    link = fit_link(sizes, times, 2, "made up")
    assert link.bandwidth == pytest.approx(1.25e9, rel=1e-6) and link.latency == pytest.approx(50e-6, rel=1e-6)
    assert link.fit_rms < 1e-9 and "RMS error 0.0%" in link.basis
    with pytest.raises(BenchInputError, match="at least 3 message sizes"):
        fit_link(sizes[:2], times[:2], 2, "two sizes")
    with pytest.raises(BenchInputError, match="non-finite"):
        fit_link(sizes[:3], [times[0], math.nan, times[2]], 2, "a nan")


def test_the_band_runs_from_full_overlap_to_none():
    compute = Compute(0.100, 0.100, 0.100, 2 / 3, "given")
    fabric = Fabric(1, gbytes(1.0), None)
    one = predict_point(compute, fabric, 1e8, 1, "ring", 32)
    assert (one.step_low_s, one.step_s, one.step_high_s, one.efficiency) == (0.1, 0.1, 0.1, 1.0)
    two = predict_point(compute, fabric, 1e8, 2, "ring", 32)   # all-reduce 0.1 s: hidden by a 0.067 s backward?
    assert two.step_high_s == pytest.approx(0.2) and two.step_low_s == pytest.approx(0.1 + 0.1 - 0.1 * 2 / 3)
    assert two.step_s == pytest.approx((two.step_low_s + two.step_high_s) / 2)
    assert two.efficiency_low == pytest.approx(0.5) and two.images_per_sec == pytest.approx(64 / two.step_s)
    small = predict_point(compute, fabric, 1e7, 2, "ring", 32)  # 0.01 s: the backward pass hides it all
    assert small.step_low_s == pytest.approx(0.1) and small.efficiency_high == 1.0


def test_device_counts_fill_whole_nodes():
    assert device_counts(16) == [1, 2, 4, 8, 16]
    assert device_counts(64, nodes=[1, 2, 64], gpus_per_node=8) == [1, 2, 4, 8, 16, 32, 64, 512]
    assert device_counts(4, devices=[3, 24], gpus_per_node=8) == [1, 2, 3, 4, 24]
    with pytest.raises(BenchInputError, match="devices=12"):
        device_counts(8, devices=[12], gpus_per_node=8)
    with pytest.raises(BenchInputError, match="nodes=0"):
        device_counts(8, nodes=[0])


def test_measured_training_across_three_links_lies_in_its_predicted_band():
    """The 12 rows of scripts/network.sh (resnet18 and vgg13 at width 0.5, Horovod and multiworker,
    100 Mbit/s, 1 Gbit/s and unshaped links between 2 hosts), each predicted from its unsynced twin and
    the collective rows measured at its place."""
    df = load_results([RUNS, COLL])
    table, skipped = validation_table(df, apart(df, "collectives"))
    assert len(table) == 12 and not skipped
    assert set(table["place"]) == {"2 hosts, 0.1 Gbit/s", "2 hosts, 1 Gbit/s", "2 hosts, unshaped"}
    assert (table["compute_from"] == "its unsynced twin").all()
    assert (table["inside"] == "yes").all(), table.to_string()
    assert (table["midpoint_error"].abs() <= 0.25).all(), table.to_string()


def test_predictions_go_to_their_own_rows_and_reports_keep_them_apart(tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert main(["resnet18", "--rows", RUNS, COLL, "--strategy", "horovod", "--transport", "gloo",
                 "--collectives-link", "1", "--max-devices", "8", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PREDICTION (not measured)" in printed and "fit over 15 sizes" in printed
    assert "without gradient sync" in printed and "11,282,960 bytes" in printed
    df = load_results([RUNS, COLL, str(out)])
    assert len(df) == 24 and (df["source"] != "prediction").all()   # the measured rows, and only them
    pred = apart(df, "predictions")
    assert list(pred["replicas"]) == [1, 2, 4, 8] and (pred["source"] == "prediction").all()
    assert (pred["pred_step_low_s"] <= pred["step_time_median_s"]).all()
    assert (pred["step_time_median_s"] <= pred["pred_step_high_s"]).all()
    assert pred["pred_efficiency"].is_monotonic_decreasing and pred["pred_efficiency"].iloc[0] == 1.0
    two = pred[pred["replicas"] == 2].iloc[0]
    assert two["hosts"] == 2 and two["link_gbps"] == 1.0 and two["transport"] == "gloo"
    assert "run 785fecb7c05d" in two["pred_basis"] and "RMS error" in two["pred_basis"]
    build_report(df, tmp_path / "report", ["md"])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Predicted scaling" in md and "Predicted, not measured: resnet18 w0.5 b16 horovod/tensorflow" in md
    assert (tmp_path / "report" / "predicted_scaling.png").stat().st_size > 0
    throughput = md.split("## Throughput")[1].split("## ")[0]
    assert "8 replica" not in throughput and "x8" not in throughput  # no predicted 8 devices among measured rows


def test_a_measured_csv_takes_predictions_only_when_asked(tmp_path, capsys):
    measured = tmp_path / "runs.csv"
    shutil.copy(RUNS, measured)
    before = measured.read_bytes()
    args = ["vgg13", "--rows", RUNS, "--link-gbps", "10", "--latency-us", "50", "--max-devices", "4",
            "--strategy", "multiworker"]
    assert main([*args, "--output", str(measured)]) == 2
    assert "holds 24 measured row(s)" in capsys.readouterr().err and measured.read_bytes() == before
    assert main([*args, "--output", str(measured), "--append"]) == 0
    df = load_results([str(measured)])
    assert len(df) == 24 and len(apart(df, "predictions")) == 3
    assert df[df["run_id"].isin(pd.read_csv(RUNS)["run_id"])].shape[0] == 24   # every measured row kept


def test_fp16_compression_halves_the_gradient_bytes(tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["resnet18", "--rows", RUNS, "--strategy", "horovod", "--hvd-compression", "fp16",
                 "--link-gbps", "1", "--latency-us", "100", "--max-devices", "2", "--output", str(out)]) == 0
    pred = apart(load_results([str(out)]), "predictions")
    assert (pred["gradient_bytes"] == 11282960 // 2).all() and (pred["hvd_compression"] == "fp16").all()


def test_what_if_from_the_h200_rows(capsys):
    assert main(["resnet18", "--rows", H200, *WHAT_IF, "--output", "-"]) == 0
    out = capsys.readouterr().out
    assert "multiworker/jax" in out  # Horovod has no JAX adapter: the JAX processes' all-reduce
    lines = [line.split() for line in out.splitlines() if line and not line.startswith("#") and "devices" not in line]
    ring = {int(x[0]): float(x[7]) for x in lines if x[2] == "ring"}  # devices nodes algorithm step [band] img/s eff
    hier = {int(x[0]): float(x[7]) for x in lines if x[2] == "hierarchical"}
    assert sorted(ring) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert all(hier[n] >= ring[n] for n in ring if n > 8)  # fewer steps over the slow link
    assert all(ring[a] >= ring[b] for a, b in zip(sorted(ring), sorted(ring)[1:]))


@pytest.mark.parametrize("args, named", [
    (["resnet50", "--rows", RUNS, "--batch-size", "16"], "`python bench/run.py resnet50 --batch-size 16`"),
    (["resnet18", "--rows", RUNS, "--link-gbps", "1"], "--link-gbps needs --latency-us"),
    (["resnet18", "--rows", RUNS, COLL, "--collectives-link", "1", "--transport", "gloo", "--strategy", "horovod",
      "--link-gbps", "1", "--latency-us", "5"], "contradicts the collective rows"),
    (["resnet18", "--rows", RUNS, "--intra-gbps", "100", "--intra-latency-us", "1", "--link-gbps", "1",
      "--latency-us", "5"], "gpus_per_node=1"),
    (["resnet18", "--rows", RUNS, "--link-gbps", "1", "--latency-us", "5", "--devices", "0"], "devices=0"),
    (["resnet18", "--rows", RUNS, "--gpus-per-node", "8", "--intra-gbps", "100", "--intra-latency-us", "1",
      "--link-gbps", "1", "--latency-us", "5", "--devices", "12"], "devices=12"),
    (["resnet18", "--rows", RUNS, "--link-gbps", "nan", "--latency-us", "5"], "link_gbps=nan"),
    (["resnet18", "--rows", RUNS, "--link-gbps", "inf", "--latency-us", "5"], "link_gbps=inf"),
    (["resnet18", "--rows", RUNS, "--max-devices", "4"], "needs the link between nodes"),
    (["resnet18", "--rows", RUNS, COLL, "--strategy", "horovod"], "differ in"),
    (["resnet18", "--rows", RUNS, "--gpus-per-node", "0"], "gpus_per_node=0"),
    (["resnet18", "--rows", RUNS, "--algorithm", "tree"], "algorithm='tree'"),
    (["resnet18", "--rows", RUNS, "--algorithm", "hierarchical", "--link-gbps", "1", "--latency-us", "5"],
     "gpus_per_node=1"),
    (["resnet18", "--rows", "/nonexistent.csv"], "/nonexistent.csv"),
    (["nosuchnet", "--rows", RUNS], "nosuchnet"),
    (["resnet18", "--rows", RUNS, "--steps", "5"], "--steps is not an option"),
    (["resnet18", "--rows", RUNS, "--batch-size", "16", "--compute-ms", "100", "--link-gbps", "1", "--latency-us", "5"],
     "--compute-ms contradicts a measured compute row"),
    (["resnet18", "--compute-ms", "100", "--link-gbps", "1", "--latency-us", "5"], "give --batch-size too"),
    (["resnet18", "--rows", H200, "--batch-size", "2048", "--strategy", "horovod", "--link-gbps", "1",
      "--latency-us", "5"], "horovod"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(args, named, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main([*args, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and named in err, err
    assert not out.exists()


def test_collective_rows_of_two_sizes_fit_nothing(tmp_path, capsys):
    few = tmp_path / "coll.csv"
    coll = pd.read_csv(COLL)
    keep = (coll["strategy"] == "horovod") & (coll["transport"] == "gloo") & (coll["link_gbps"] == 1.0)
    coll[keep & coll["size_bytes"].isin([2**20, 2**21])].to_csv(few, index=False)
    assert main(["resnet18", "--rows", RUNS, str(few), "--strategy", "horovod", "--output", "-"]) == 2
    assert "at least 3 message sizes" in capsys.readouterr().err


@pytest.mark.cluster
@pytest.mark.distributed
def test_a_prediction_from_fresh_rows_across_a_shaped_link(tmp_path):
    """Collective rows, an unsynced and a synced Horovod run measured now across two hosts at 100
    Mbit/s; --validate predicts the synced run from the other two. How close it comes is a
    measurement (tests/benchmarks/test_prediction.py, docs/measurements/); here: every input was
    found, and no prediction beats the link (12.5 MB/s carries the gradients no faster)."""
    horovodrun = str(Path(PY).with_name("horovodrun"))
    if not Path(horovodrun).exists():
        pytest.skip(f"needs horovodrun beside {PY} (`bash scripts/setup.sh` builds Horovod)")
    runs, coll = tmp_path / "runs.csv", tmp_path / "coll.csv"
    on_hosts = [PY, "-m", "launch.hosts", "exec", "h0", "--", horovodrun, "-np", "2", "-H", "h0:1,h1:1", "--gloo"]
    train = [PY, str(REPO / "bench" / "run.py"), "lenet5", "--batch-size", "16", "--steps", "4", "--warmup-steps",
             "1", "--no-progress", "--output", str(runs)]
    with emulated_hosts(2, "100mbit"):
        for cmd in ([PY, "-m", "bench.collectives", "--min-bytes", "128K", "--max-bytes", "1M", "--dtypes", "fp32",
                     "--iters", "3", "--warmup-iters", "1", "--budget-s", "1", "--output", str(coll)],
                    [*train, "--no-gradient-sync"], train):
            r = subprocess.run([*on_hosts, *cmd], cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = load_results([runs, coll])
    table, skipped = validation_table(df, apart(df, "collectives"))
    assert not skipped and len(table) == 1, skipped
    row = table.iloc[0]
    assert row["compute_from"] == "its unsynced twin" and row["place"] == "2 hosts, 0.1 Gbit/s"
    gradient = df[df["gradient_sync"]].iloc[0]["gradient_bytes"]
    assert row["allreduce_ms"] >= 0.9 * 1e3 * gradient / 12.5e6, (row["allreduce_ms"], gradient)
    assert row["band_low_ms"] <= row["midpoint_ms"] <= row["band_high_ms"]
    r = subprocess.run([PY, "-m", "bench.predict", "--validate", "--rows", str(runs), str(coll)], cwd=REPO,
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0 and "1 measured row(s)" in r.stdout, r.stdout + r.stderr


def test_two_loads_with_predictions_and_collectives_compare_and_concatenate(tmp_path):
    """pandas compares the attrs of frames it joins: the rows kept apart must not make that fail."""
    pred = tmp_path / "pred.csv"
    assert main(["vgg13", "--rows", RUNS, "--link-gbps", "1", "--latency-us", "50", "--max-devices", "2",
                 "--strategy", "horovod", "--output", str(pred)]) == 0
    a, b = load_results([RUNS, COLL, str(pred)]), load_results([RUNS, COLL, str(pred)])
    assert len(pd.concat([a, b])) == 48
    r = subprocess.run([PY, "-m", "bench.report", "--compare", str(pred), str(pred), "--fail-on-regression"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 2 and "nothing to compare" in r.stderr and "Traceback" not in r.stderr  # predictions only
    r = subprocess.run([PY, "-m", "bench.report", "--compare", RUNS, RUNS], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_a_published_figure_stands_in_where_no_row_measured_the_compute(capsys):
    """Horovod's 2017 ResNet-101 (batch 64, 224 px, 119.4 images/sec on one GPU): --compute-ms, and the
    gradient bytes from our ResNet-101's description (44.5 M parameters)."""
    assert main(["resnet101", "--compute-ms", "536.01", "--batch-size", "64", "--image-size", "224", "--num-classes",
                 "1000", "--form", "imagenet", "--gpus-per-node", "4", "--intra-gbps", "96", "--intra-latency-us", "10",
                 "--link-gbps", "25", "--latency-us", "5", "--devices", "16,512", "--output", "-"]) == 0
    out = capsys.readouterr().out
    assert "compute 536.01 ms per step (given)" in out and "178,196,640 bytes" in out
    assert "horovod/tensorflow" in out
