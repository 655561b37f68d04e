"""Reports on a hand-written CSV with known values: pivots, ratios, efficiency, plots, compare.

The fixture is a schema-1 file: its diverged run still says `nan`, which loading renames."""
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
    assert set(df["status"]) == {"ok", "failed", "diverged"}  # schema 1's 'nan', not a missing value
    assert df["images_per_sec"].isna().all()  # a column the fixture's older layout lacks


def test_throughput_pivot_uses_the_latest_row(df):
    t = _table(throughput_tables(df), "train, single, tensorflow, 1 replica(s) on 1 worker(s), synthetic")
    assert t.loc["vgg13", 32] == 400.0  # not the older 100
    assert t.loc["vgg13", 64] == 500.0
    assert t.loc["resnet18", 32] == 200.0 and t.loc["resnet18", 64] == 250.0
    h = _table(throughput_tables(df), "train, horovod, tensorflow, 2 replica(s)")
    assert h.loc["vgg13", 32] == 720.0 and h.loc["resnet18", 32] == 300.0


def test_step_time_pivot_in_ms(df):
    t = _table(step_time_tables(df), "train, single, tensorflow, 1 replica(s) on 1 worker(s), synthetic")
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
    assert sorted(f["status"]) == ["diverged", "failed"] and "boom" in " ".join(f["error"])
    shared, warnings = provenance_summary(df)
    assert shared["cpu_model"] == "cpuX" and shared["tf_version"] == "2.21.0"
    assert any("hostname" in w and "hostA" in w and "hostB" in w for w in warnings)


def test_report_files_and_valid_pngs(df, tmp_path):
    files = build_report(df, tmp_path, ["md", "html"])
    names = {f.name for f in files}
    # a plot only where its section has rows: the fixture has no inference rows
    assert names == {"throughput.png", "scaling.png", "accuracy.png", "report.md", "report.html"}
    assert not (tmp_path / "latency.png").exists()
    import matplotlib.image as mpimg
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(png)
        assert img.shape[0] > 100 and img.shape[1] > 100
    md = (tmp_path / "report.md").read_text()
    assert "| vgg13 | 400.0 [390.0, 410.0] | 500.0 [480.0, 520.0] |" in md
    assert "![images/sec against per-replica batch size (median, 95% CI)](throughput.png)" in md
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
    with pytest.raises(BenchInputError, match="not a cnnbench results"):
        load_results([notours])
    newer = tmp_path / "newer.csv"
    newer.write_text(FIXTURE.read_text().replace("\n1,", "\n9,"))
    with pytest.raises(BenchInputError, match="newer cnnbench"):
        load_results([newer])
    r = subprocess.run([sys.executable, "bench/report.py", str(tmp_path / "missing.csv")], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.csv" in r.stderr


# ---- configurations are config_keys: rows differing only in lr are never merged -----------
ORIGINAL_LR, OTHER_LR = 0.001, 0.01


def _lr_variant(tmp_path, name, other_scale=1.0):
    """The fixture with lr recorded, plus vgg13/single/32/synthetic again at another lr (300
    images/sec [290, 310], times `other_scale`)."""
    d = pd.read_csv(FIXTURE, keep_default_na=False, na_values=[""]).assign(lr=ORIGINAL_LR)
    base = d[(d.model == "vgg13") & (d.strategy == "single") & (d.batch_size == 32) & (d.data == "synthetic")]
    other = base.iloc[[-1]].assign(lr=OTHER_LR, timestamp_utc="2026-01-03T00:00:00Z",
                                   images_per_sec_median=300 * other_scale,
                                   images_per_sec_median_ci95_low=290 * other_scale,
                                   images_per_sec_median_ci95_high=310 * other_scale)
    p = tmp_path / name
    pd.concat([d, other]).to_csv(p, index=False)
    return p


def test_rows_differing_only_in_lr_are_two_configurations(tmp_path):
    from bench.reporting.tables import latest_ok

    df = load_results([_lr_variant(tmp_path, "lr.csv")])
    ok = latest_ok(df)
    pair = ok[(ok.model == "vgg13") & (ok.strategy == "single") & (ok.batch_size == 32) & (ok.data == "synthetic")]
    assert sorted(pair["lr"]) == [ORIGINAL_LR, OTHER_LR] and pair["config_key"].nunique() == 2
    assert sorted(pair["images_per_sec_median"]) == [300.0, 400.0]

    tables = throughput_tables(df)
    single = "train, single, tensorflow, 1 replica(s) on 1 worker(s), synthetic"
    assert _table(tables, single + ", fp32, width 0.25, 32px, 100 classes, lr 0.001").loc["vgg13", 32] == 400.0
    other = _table(tables, single + ", fp32, width 0.25, 32px, 100 classes, lr 0.01")
    assert other.loc["vgg13", 32] == 300.0 and list(other.index) == ["vgg13"]
    assert all(t.endswith((", lr 0.001", ", lr 0.01")) for t in tables)  # lr varies: every title names it


def test_compare_pairs_each_configuration_with_its_own(tmp_path):
    old, new = _lr_variant(tmp_path, "old.csv"), _lr_variant(tmp_path, "new.csv", other_scale=0.5)
    c = compare(load_results([old]), load_results([new]))
    assert len(c) == 10  # the fixture's 9 ok configurations and the lr variant, each in both files
    row = c[(c.model == "vgg13") & (c.strategy == "single") & (c.batch_size == 32) & (c.data == "synthetic")]
    by_lr = row.set_index("lr")
    assert by_lr.loc[ORIGINAL_LR, ["images_per_sec_old", "images_per_sec_new"]].tolist() == [400.0, 400.0]
    assert by_lr.loc[OTHER_LR, ["images_per_sec_old", "images_per_sec_new"]].tolist() == [300.0, 150.0]
    assert by_lr.loc[OTHER_LR, "verdict"] == "regression"
    assert (c["verdict"] == "regression").sum() == 1
    r = subprocess.run([sys.executable, "bench/report.py", "--compare", str(old), str(new), "--fail-on-regression"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1 and "10 configuration(s) in both: 1 regression(s)" in r.stdout
    assert "| num_classes | lr | images_per_sec_old |" in r.stdout  # lr tells the two rows apart


def test_vgg_vs_resnet_picks_models_by_registry_family(df):
    renamed = df.drop(columns="config_key").assign(model=df["model"].replace({"vgg13": "vggish"}))
    assert vgg_vs_resnet(renamed).empty  # named like a VGG, but not one in the registry
    assert list(vgg_vs_resnet(df).columns) == ["strategy", "replicas", "data", "batch_size", "vgg", "resnet",
                                               "images_per_sec_ratio", "images_per_sec_ratio_ci95_low",
                                               "images_per_sec_ratio_ci95_high", "top1_ratio"]


# ---- rendering and plots ------------------------------------------------------------------
def test_html_is_rendered_from_dataframes(df, tmp_path):
    from bench.reporting.render import sections

    build_report(df, tmp_path, ["html"])
    html = (tmp_path / "report.html").read_text()
    n_tables = sum(len(s.tables) for s in sections(df))
    assert html.count('<table class="dataframe"') == n_tables > 0  # pandas' to_html, not parsed markdown
    assert "<td>400.0 [390.0, 410.0]</td>" in html and "<td>exit code 1: RuntimeError: boom</td>" in html
    assert "_none_" not in html and "|---|" not in html and "**" not in html
    assert html.count("data:image/png;base64,") == 3
    assert not (tmp_path / "report.md").exists()

    ok_only = tmp_path / "ok"
    build_report(df[df["status"] == "ok"], ok_only, ["md", "html"])
    page = (ok_only / "report.html").read_text()
    assert 'id="failures"' not in page and "No failures: all 10 runs ended ok." in page  # no empty section
    assert "## Failures" not in (ok_only / "report.md").read_text()


def test_throughput_plot_draws_the_median_ci_as_error_bars(df):
    from matplotlib.container import ErrorbarContainer

    from bench.reporting.plots import median_ci_errors, throughput_figure
    from bench.reporting.tables import latest_ok

    ok = latest_ok(df)
    vgg = ok[(ok.model == "vgg13") & (ok.strategy == "single") & (ok.data == "synthetic")].sort_values("batch_size")
    np.testing.assert_allclose(median_ci_errors(vgg), [[10.0, 20.0], [10.0, 20.0]])  # 400 [390, 410], 500 [480, 520]

    fig = throughput_figure(df)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4
    bars = {c.get_label(): c for ax in axes for c in ax.containers if isinstance(c, ErrorbarContainer)
            if ax.get_title().startswith("train: single x1 tensorflow, synthetic")}
    assert set(bars) == {"vgg13", "resnet18"}
    (segments,) = [lc.get_segments() for lc in bars["vgg13"].lines[2]]
    np.testing.assert_allclose([s.tolist() for s in segments], [[[32, 390], [32, 410]], [[64, 480], [64, 520]]])


def test_cli_takes_no_abbreviated_options(tmp_path, capsys):
    from bench.report import main

    assert main([str(FIXTURE), "--ou", str(tmp_path / "r")]) == 2  # --ou is not --out
    assert "--ou" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_tensorflow_vs_jax_pairs_rows_that_differ_only_in_backend(tmp_path):
    from bench.reporting.tables import backend_comparison

    d = pd.read_csv(FIXTURE, keep_default_na=False, na_values=[""])
    jax = d[(d["status"] == "ok") & (d["strategy"] == "single")].copy()
    jax["backend"], jax["xla"] = "jax", True  # JAX always compiles with XLA
    jax["images_per_sec_median"] *= 1.5
    both = tmp_path / "both.csv"
    pd.concat([d, jax]).to_csv(both, index=False)
    t = backend_comparison(load_results([both]))
    assert len(t) > 0 and (t["jax_tensorflow_ratio"].round(9) == 1.5).all()
    assert set(t["strategy"]) == {"single"} and not t["tensorflow_xla"].any()


def _rows_csv(path, rows):
    from bench.config import RunConfig
    from bench.results import Outcome, Topology, append_row, build_row

    for cells in rows:
        cfg = RunConfig(model=cells.pop("model"), batch_size=cells["batch_size"], mode=cells.pop("mode", "train"),
                        find_max_batch=cells.pop("find_max_batch", False),
                        memory_cap_gb=cells.pop("memory_cap_gb", None)).resolved(has_gpu=False)
        b = cells.pop("batch_size")
        row = build_row(cfg, Outcome(cells.pop("status", "ok")), topology=Topology(1, 1, b, b))
        append_row(path, {**row, **cells})
    return load_results([path])


def test_latency_memory_and_max_batch_tables(tmp_path):
    from bench.reporting.tables import latency_table, max_batch_table, memory_table

    lat = {"latency_p50_ms": 10.0, "latency_p90_ms": 11.0, "latency_p95_ms": 12.0, "latency_p99_ms": 15.0,
           "latency_per_image_ms": 1.25, "images_per_sec_median": 800.0}
    mib = 2**20
    df = _rows_csv(tmp_path / "r.csv", [
        {"model": "vgg13", "batch_size": 8, "mode": "inference", **lat, "peak_mem_bytes": 300 * mib,
         "mem_estimate_bytes": 200 * mib, "mem_source": "cpu_rss"},
        {"model": "vgg13", "batch_size": 8, "images_per_sec_median": 100.0},  # a training row: no latency table
        # a max-batch search under a 1 GiB cap: 32 and 48 fit, 64 is over the cap, 128 ran out of memory
        *({"model": "resnet18", "batch_size": b, "find_max_batch": True, "memory_cap_gb": 1.0,
           "images_per_sec_median": float(b), "peak_mem_bytes": peak and peak * mib, "status": status}
          for b, peak, status in ((32, 500, "ok"), (64, 1100, "ok"), (48, 900, "ok"), (128, None, "oom"))),
    ])
    t = latency_table(df)
    assert len(t) == 1 and t.iloc[0]["latency_p99_ms"] == 15.0 and t.iloc[0]["images_per_sec"] == 800.0
    m = memory_table(df)
    row = m[m["model"] == "vgg13"].iloc[0]
    assert row["peak_mib"] == 300 and row["estimate_mib"] == 200 and row["measured_over_estimate"] == 1.5
    (mb,) = max_batch_table(df).to_dict("records")
    assert (mb["largest_batch"], mb["first_misfit_batch"], mb["probes"], mb["images_per_sec"]) == (48, 64, 4, 48.0)
    assert mb["why"] == "peak 1.07 GiB > cap 1 GiB" and mb["peak_mib"] == 900
    files = {p.name for p in build_report(df, tmp_path / "rep")}
    assert "latency.png" in files
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Inference latency" in md and "Largest batch that fits" in md and "Peak memory" in md


def test_where_the_time_goes_splits_each_synced_step_by_its_unsynced_twin(tmp_path):
    """Known medians and CIs: the exposed communication is the synced median minus the unsynced
    one, its CI adds the two medians' half-widths in quadrature, shares add to 1, and the
    efficiency uses the one-replica run. The unsynced rows appear in no other table."""
    from bench.config import RunConfig
    from bench.reporting.tables import where_time_goes
    from bench.results import Outcome, Topology, append_row, build_row

    path = tmp_path / "runs.csv"

    def add(strategy, replicas, sync, median_ms, half_ms, wait_ms=None):
        cfg = RunConfig(model="resnet18", batch_size=8, strategy=strategy, gradient_sync=sync).resolved(has_gpu=False)
        row = build_row(cfg, Outcome("ok"), topology=Topology(replicas, replicas, 8, 8 * replicas))
        m, h = median_ms / 1e3, half_ms / 1e3
        append_row(path, {**row, "step_time_median_s": m, "step_time_median_ci95_low_s": m - h,
                          "step_time_median_ci95_high_s": m + h, "images_per_sec_median": 8 * replicas / m,
                          "data_wait_ms": wait_ms})

    add("single", 1, True, 20.0, 1.0)
    add("horovod", 2, True, 30.0, 3.0, wait_ms=2.0)
    add("horovod", 2, False, 22.0, 4.0)
    add("multiworker", 2, True, 25.0, 1.0)  # no twin: not in the breakdown
    df = load_results([path])
    t = where_time_goes(df)
    assert len(t) == 1
    r = t.iloc[0]
    assert (r["strategy"], r["replicas"]) == ("horovod", 2)
    assert r["step_ms"] == pytest.approx(30.0) and r["input_wait_ms"] == pytest.approx(2.0)
    assert r["exposed_comm_ms"] == pytest.approx(8.0) and r["compute_ms"] == pytest.approx(20.0)
    assert r["exposed_comm_ci95"] == "[3.0, 13.0]"  # 8 -/+ hypot(3, 4)
    assert r["input_share"] + r["comm_share"] + r["compute_share"] == pytest.approx(1.0)
    assert r["efficiency"] == pytest.approx((16 / 0.030) / (2 * 8 / 0.020))
    s = scaling_efficiency(df)
    assert len(s[s.strategy == "horovod"]) == 1 and s[s.strategy == "horovod"]["images_per_sec"].iloc[0] == \
        pytest.approx(16 / 0.030)  # the unsynced twin is no training result
    h = _table(throughput_tables(df), "train, horovod")
    assert h.loc["resnet18", 8] == pytest.approx(16 / 0.030)


def test_families_are_compared_by_their_fastest_model_with_the_work_rate_each_achieves(tmp_path):
    from bench.report import family_comparison

    rows = [{"model": m, "batch_size": 32, "images_per_sec_median": ips, "gflops_per_image": g, "top1": t}
            for m, ips, g, t in [("resnet18", 100.0, 1.0, 0.9), ("resnet34", 50.0, 2.0, 0.92),
                                 ("vgg13", 300.0, 0.5, 0.8), ("lenet5", 5000.0, 0.001, 0.7),
                                 ("densenet121", 40.0, 1.8, None)]]
    t = family_comparison(_rows_csv(tmp_path / "f.csv", rows)).set_index("family")
    assert list(t.index) == ["lenet", "vgg", "resnet", "densenet"]  # fastest first
    assert t.loc["resnet", "model"] == "resnet18" and t.loc["resnet", "images_per_sec_vs_resnet"] == 1.0
    assert t.loc["vgg", "images_per_sec_vs_resnet"] == pytest.approx(3.0)
    assert t.loc["vgg", "gflop_per_sec"] == pytest.approx(300 * 0.5 * 3)  # training: 3 passes
    assert t.loc["vgg", "top1"] == pytest.approx(0.8) and np.isnan(t.loc["densenet", "top1"])


def test_a_diverged_run_that_kept_its_timing_is_shown_flagged(tmp_path):
    """A throughput run whose loss went non-finite still timed every step: the throughput tables
    and the findings show it, marked; the accuracy and scaling tables take ok rows only."""
    from bench.report import findings
    from bench.reporting.tables import throughput_ci_tables

    d = pd.read_csv(FIXTURE, keep_default_na=False, na_values=[""])
    d.loc[2, "status"], d.loc[2, "error"] = "diverged", "non-finite loss nan at step 9; every step was run and timed"
    p = tmp_path / "runs.csv"
    d.to_csv(p, index=False)
    df = load_results([p])
    t = _table(throughput_ci_tables(df), "train, single, tensorflow, 1 replica(s) on 1 worker(s), synthetic")
    assert t.loc["vgg13", 64] == "500.0 [480.0, 520.0] diverged" and t.loc["vgg13", 32] == "400.0 [390.0, 410.0]"
    assert 64 not in set(best_batch_sizes(df).query("model == 'vgg13' and data == 'synthetic' and strategy == 'single'")
                         ["batch_size"])
    d.loc[[6, 10], "status"] = "failed"  # so that the diverged row is vgg13's fastest
    d.to_csv(p, index=False)
    (best,) = [f.text for f in findings(load_results([p])) if f.kind == "best" and f.text.startswith("vgg13")]
    assert "fastest at 500 images/sec" in best and "flagged: its loss went non-finite" in best
