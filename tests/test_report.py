"""Reports on a hand-written CSV with known values: pivots, ratios, efficiency, plots, compare."""
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchInputError
from bench.report import (accuracy_table, best_batch_sizes, build_report, compare, failures, load_results,
                          provenance_summary, scaling_efficiency, step_time_tables, throughput_tables,
                          vgg_vs_resnet)
from helpers import REPO

FIXTURE = REPO / "tests" / "fixtures" / "report_runs.csv"


@pytest.fixture(scope="module")
def df():
    return load_results([FIXTURE])


def _table(tables, prefix):
    (t,) = [v for k, v in tables.items() if k.startswith(prefix)]
    return t


def test_load_results_types_columns(df):
    assert len(df) == 12
    assert df["batch_size"].dtype == "Int64" and df["images_per_sec_median"].dtype == float
    assert df["xla"].dtype == "boolean" and str(df["timestamp_utc"].dtype).startswith("datetime64")
    assert set(df["status"]) == {"ok", "failed", "nan"}  # 'nan' stays a status, not a missing value
    assert df["images_per_sec"].isna().all()  # a column the fixture's older layout lacks


def test_throughput_pivot_uses_the_latest_row(df):
    t = _table(throughput_tables(df), "single, 1 replica(s) on 1 worker(s), synthetic")
    assert t.loc["vgg13", 32] == 400.0  # not the older 100
    assert t.loc["vgg13", 64] == 500.0
    assert t.loc["resnet18", 32] == 200.0 and t.loc["resnet18", 64] == 250.0
    h = _table(throughput_tables(df), "horovod, 2 replica(s)")
    assert h.loc["vgg13", 32] == 720.0 and h.loc["resnet18", 32] == 300.0


def test_step_time_pivot_in_ms(df):
    t = _table(step_time_tables(df), "single, 1 replica(s) on 1 worker(s), synthetic")
    assert t.loc["vgg13", 64] == pytest.approx(128.0)
    assert t.loc["resnet18", 32] == pytest.approx(160.0)


def test_vgg_vs_resnet_ratios(df):
    r = vgg_vs_resnet(df)
    single = r[(r.strategy == "single") & (r.batch_size == 32)].set_index("data")
    assert single.loc["synthetic", "images_per_sec_ratio"] == pytest.approx(2.0)
    assert single.loc["digits", "images_per_sec_ratio"] == pytest.approx(2.0)
    assert single.loc["digits", "top1_ratio"] == pytest.approx(0.8 / 0.9)
    assert np.isnan(single.loc["synthetic", "top1_ratio"])
    assert r[(r.strategy == "single") & (r.batch_size == 64)]["images_per_sec_ratio"].item() == pytest.approx(2.0)
    assert r[r.strategy == "horovod"]["images_per_sec_ratio"].item() == pytest.approx(2.4)


def test_scaling_efficiency(df):
    e = scaling_efficiency(df)
    hv = e[(e.strategy == "horovod") & (e.replicas == 2)].set_index("model")
    assert hv.loc["vgg13", "efficiency"] == pytest.approx(720 / (2 * 380))  # own 1-replica baseline
    assert hv.loc["resnet18", "efficiency"] == pytest.approx(300 / (2 * 200))  # falls back to single
    single = e[(e.strategy == "single") & (e.model == "vgg13") & (e.batch_size == 32) & (e.images_per_sec == 400)]
    assert single["efficiency"].item() == pytest.approx(1.0)


def test_best_batch_size(df):
    b = best_batch_sizes(df).set_index(["model", "strategy", "replicas", "data"])
    assert b.loc[("vgg13", "single", 1, "synthetic"), "batch_size"] == 64
    assert b.loc[("resnet18", "single", 1, "synthetic"), "batch_size"] == 64
    assert b.loc[("vgg13", "single", 1, "digits"), "batch_size"] == 32
    assert b.loc[("vgg13", "horovod", 2, "synthetic"), "images_per_sec"] == 720.0


def test_accuracy_failures_and_provenance(df):
    acc = accuracy_table(df).set_index("model")
    assert acc.loc["vgg13", "top1"] == 0.8 and acc.loc["resnet18", "top1"] == 0.9
    f = failures(df)
    assert sorted(f["status"]) == ["failed", "nan"] and "boom" in " ".join(f["error"])
    shared, warnings = provenance_summary(df)
    assert shared["cpu_model"] == "cpuX" and shared["tf_version"] == "2.21.0"
    assert any("hostname" in w and "hostA" in w and "hostB" in w for w in warnings)


def test_report_files_and_valid_pngs(df, tmp_path):
    files = build_report(df, tmp_path, ["md", "html"])
    names = {f.name for f in files}
    assert names == {"throughput.png", "scaling.png", "accuracy.png", "report.md", "report.html"}
    import matplotlib.image as mpimg
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(png)
        assert img.shape[0] > 100 and img.shape[1] > 100
    md = (tmp_path / "report.md").read_text()
    assert "| vgg13 | 400.0 [390.0, 410.0] | 500.0 [480.0, 520.0] |" in md
    assert "![images/sec against batch size](throughput.png)" in md
    assert "warning: rows mix hardware" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3


def _variant(tmp_path, name, scale, ci_shift=0.0):
    d = pd.read_csv(FIXTURE, keep_default_na=False, na_values=[""])
    for c in ("images_per_sec_median", "images_per_sec_median_ci95_low", "images_per_sec_median_ci95_high"):
        d[c] = d[c] * scale
    p = tmp_path / name
    d.to_csv(p, index=False)
    return p


def test_compare_flags_regressions_outside_both_cis(tmp_path):
    same = compare(load_results([FIXTURE]), load_results([FIXTURE]))
    assert (same["verdict"] == "within noise").all() and (same["change_pct"].abs() < 1e-9).all()
    slow = _variant(tmp_path, "slow.csv", 0.5)
    c = compare(load_results([FIXTURE]), load_results([slow]))
    assert (c["verdict"] == "regression").all()
    assert c["change_pct"].tolist() == pytest.approx([-50.0] * len(c))
    fast = _variant(tmp_path, "fast.csv", 1.02)  # +2%: inside the CIs
    assert (compare(load_results([FIXTURE]), load_results([fast]))["verdict"] == "within noise").all()
    cli = [sys.executable, "bench/report.py", "--compare", str(FIXTURE), str(slow)]
    assert subprocess.run(cli, cwd=REPO, capture_output=True).returncode == 0
    r = subprocess.run([*cli, "--fail-on-regression"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1 and "regression" in r.stdout


def test_bad_and_newer_files_fail_clearly(tmp_path):
    notours = tmp_path / "x.csv"
    notours.write_text("a,b\n1,2\n")
    with pytest.raises(BenchInputError, match="not a cnnbench results file"):
        load_results([notours])
    newer = tmp_path / "newer.csv"
    newer.write_text(FIXTURE.read_text().replace("\n1,", "\n9,"))
    with pytest.raises(BenchInputError, match="newer cnnbench"):
        load_results([newer])
    r = subprocess.run([sys.executable, "bench/report.py", str(tmp_path / "missing.csv")], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.csv" in r.stderr
