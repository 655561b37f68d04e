"""Reports on a hand-written CSV with known values: pivots, ratios, efficiency, plots, compare.

The fixture is a schema-1 file: its diverged run still says `nan`, which loading renames."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from bench.errors import BenchInputError
from bench.report.render import build_report
from bench.report.tables import (
    accuracy_table,
    best_batch_sizes,
    compare,
    failures,
    provenance_summary,
    scaling_efficiency,
    step_time_tables,
    throughput_tables,
    vgg_vs_resnet,
)
from bench.results.columns import SCHEMA_VERSION
from bench.results.load import load_results

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


def _variant(tmp_path, name, scale):
    """The fixture with images/sec times `scale`, and each row's step statistics to match (one
    run a row: 5% spread over 50 steps)."""
    d = pd.read_csv(FIXTURE, keep_default_na=False, na_values=[""])
    for c in ("images_per_sec_median", "images_per_sec_median_ci95_low", "images_per_sec_median_ci95_high"):
        d[c] = d[c] * scale
    d["global_batch"] = d["batch_size"] * d["replicas"]
    d["step_time_mean_s"] = d["global_batch"] / d["images_per_sec_median"]
    d["step_time_std_s"] = 0.05 * d["step_time_mean_s"]
    d["timed_steps"] = 50
    p = tmp_path / name
    d.to_csv(p, index=False)
    return p


def test_compare_tests_each_configuration(tmp_path):
    base = _variant(tmp_path, "base.csv", 1.0)
    same = compare(load_results([base]), load_results([base]))
    assert (same["verdict"] == "no significant difference").all() and (same["change_pct"].abs() < 1e-9).all()
    slow = _variant(tmp_path, "slow.csv", 0.5)
    c = compare(load_results([base]), load_results([slow]))
    assert (c["verdict"] == "slower").all() and (c["p_value"] < 0.05).all() and (c["runs"] == "1 vs 1").all()
    assert c["change_pct"].tolist() == pytest.approx([-50.0] * len(c))
    assert c["test"].str.contains("ignoring between-run variance").all()  # one run a side: a t-test across steps
    fast = _variant(tmp_path, "fast.csv", 1.005)  # +0.5%: inside the noise of 50 steps
    assert (compare(load_results([base]), load_results([fast]))["verdict"] == "no significant difference").all()
    assert (compare(load_results([FIXTURE]), load_results([slow]))["verdict"] == "untested").all()  # no step stats
    cli = [sys.executable, "-m", "bench.report", "--compare", str(base), str(slow)]
    assert subprocess.run(cli, cwd=REPO, capture_output=True).returncode == 0
    r = subprocess.run([*cli, "--fail-on-regression"], cwd=REPO, capture_output=True, text=True)
    # one run a side cannot decide a gate: reported slower, not failed (tests/test_significance.py)
    assert r.returncode == 0 and "slower" in r.stdout and "without enough runs to decide" in r.stderr


def test_bad_and_newer_files_fail_clearly(tmp_path):
    notours = tmp_path / "x.csv"
    notours.write_text("a,b\n1,2\n")
    with pytest.raises(BenchInputError, match="not a cnnbench results"):
        load_results([notours])
    newer = tmp_path / "newer.csv"
    newer.write_text(FIXTURE.read_text().replace("\n1,", f"\n{SCHEMA_VERSION + 1},"))
    with pytest.raises(BenchInputError, match="newer cnnbench"):
        load_results([newer])
    r = subprocess.run([sys.executable, "-m", "bench.report", str(tmp_path / "missing.csv")], cwd=REPO,
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
    from bench.report.tables import latest_ok

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
    assert by_lr.loc[OTHER_LR, "ratio"] == pytest.approx(0.5) and by_lr.loc[ORIGINAL_LR, "ratio"] == 1.0
    assert (c["verdict"] == "untested").all()  # the fixture has no step statistics to test with
    r = subprocess.run([sys.executable, "-m", "bench.report", "--compare", str(old), str(new), "--fail-on-regression"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "10 configuration(s) in both: 0 slower" in r.stdout and "10 untested" in r.stdout
    assert "| num_classes | lr | images_per_sec_old |" in r.stdout  # lr tells the two rows apart


def test_vgg_vs_resnet_picks_models_by_registry_family(df):
    renamed = df.drop(columns="config_key").assign(model=df["model"].replace({"vgg13": "vggish"}))
    assert vgg_vs_resnet(renamed).empty  # named like a VGG, but not one in the registry
    assert list(vgg_vs_resnet(df).columns) == ["strategy", "replicas", "data", "batch_size", "vgg", "resnet",
                                               "images_per_sec_ratio", "images_per_sec_ratio_ci95_low",
                                               "images_per_sec_ratio_ci95_high", "top1_ratio"]


# ---- rendering and plots ------------------------------------------------------------------
def test_html_is_rendered_from_dataframes(df, tmp_path):
    from bench.report.render import sections

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

    from bench.report.plots import median_ci_errors, throughput_figure
    from bench.report.tables import latest_ok

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
    from bench.report.cli import main

    assert main([str(FIXTURE), "--ou", str(tmp_path / "r")]) == 2  # --ou is not --out
    assert "--ou" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_tensorflow_vs_jax_pairs_rows_that_differ_only_in_backend(tmp_path):
    from bench.report.tables import backend_comparison

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
    from bench.config.schema import RunConfig
    from bench.results.row import Outcome, Topology, build_row
    from bench.results.store import append_row

    for cells in rows:
        cfg = RunConfig(model=cells.pop("model"), batch_size=cells["batch_size"], mode=cells.pop("mode", "train"),
                        find_max_batch=cells.pop("find_max_batch", False),
                        memory_cap_gb=cells.pop("memory_cap_gb", None)).resolved(has_gpu=False)
        b = cells.pop("batch_size")
        row = build_row(cfg, Outcome(cells.pop("status", "ok")), topology=Topology(1, 1, b, b))
        append_row(path, {**row, **cells})
    return load_results([path])


def test_latency_memory_and_max_batch_tables(tmp_path):
    from bench.report.tables import latency_table, max_batch_table, memory_table

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
    from bench.config.schema import RunConfig
    from bench.report.tables import where_time_goes
    from bench.results.row import Outcome, Topology, build_row
    from bench.results.store import append_row

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
    from bench.report.tables import family_comparison

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
    from bench.report.findings import findings
    from bench.report.tables import throughput_ci_tables

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


# ---- issue 21: the report's folder, hostile and odd cells, locales, a full disk -------------
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a\rb", "c\nd", "e\r\nf", "g\x1b[31mh\x7fi",
           "j\x00k\x85l", "m\u2028n\u202eo", "$x^{$", "$\\frac{1}{2}$", "=SUM(A1)", "+1", "-1", "@cmd", "|p|q|",
           "[x](javascript:alert(1))", "**b** _i_ ~~s~~ `c`", "- item", "1. item", "# head", "&amp; &lt;", "\\"]
_TAGS = ("<script", "<img src=x", "<iframe", "<object", "<svg")


def _base_row(**cells):
    from bench.config.schema import RunConfig
    from bench.results.row import Outcome, Topology, build_row

    row = build_row(RunConfig(model="vgg11", batch_size=8).resolved(has_gpu=False), Outcome("ok"),
                    topology=Topology(1, 1, 8, 8))
    return {**row, "images_per_sec_median": 10.0, "images_per_sec_median_ci95_low": 9.0,
            "images_per_sec_median_ci95_high": 11.0, "step_time_median_s": 0.8, **cells}


def _write_rows(path, rows):
    """A results CSV written by the csv module itself, every cell quoted: it holds any text
    (a CR too), whatever bench.results' writer makes of such text."""
    import csv

    from bench.results.columns import COLUMNS
    from bench.results.store import format_row

    assert format_row  # the same columns as the project's writer
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r[c], float) else str(r[c])
                        for c in COLUMNS])
    return path


def _report_cli(args, env=None, **kw):
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8", "LANG", "LC_ALL",
                                                               "LC_CTYPE")}
    return subprocess.run([sys.executable, "-m", "bench.report", *map(str, args)], cwd=REPO, capture_output=True,
                          env={**base, **(env or {})}, timeout=300, **kw)


def _listing(folder):
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def test_out_refuses_to_overwrite_a_file_it_did_not_write(df, tmp_path):
    from bench.report.output import MANIFEST

    out = tmp_path / "mine"
    out.mkdir()
    (out / "throughput.png").write_bytes(b"my own plot")
    (out / "notes.txt").write_text("mine too")
    before = _listing(out)
    with pytest.raises(BenchInputError, match="refusing to overwrite .*throughput.png"):
        build_report(df, out, ["md", "html"])
    assert _listing(out) == before  # nothing written, nothing deleted, no manifest
    r = _report_cli([FIXTURE, "--out", out], text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "throughput.png" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == "" and _listing(out) == before
    # a folder (not a file) of one of its names, and a manifest that is not one, are refused too
    odd = tmp_path / "odd"
    (odd / "report.html").mkdir(parents=True)
    with pytest.raises(BenchInputError, match="report.html"):
        build_report(df, odd, ["html"])
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / MANIFEST).write_text('{"kind": "something else", "files": ["notes.txt"]}')
    with pytest.raises(BenchInputError, match=MANIFEST):
        build_report(df, forged, ["md"])


def test_out_deletes_only_stale_plots_it_wrote_and_leaves_a_users_file(tmp_path):
    import json

    from bench.report.output import MANIFEST

    out = tmp_path / "rep"
    inference = _write_rows(tmp_path / "inf.csv", [_base_row(mode="inference", latency_p50_ms=1.0,
                                                             latency_p99_ms=2.0)])
    assert _report_cli([inference, "--out", out]).returncode == 0
    assert (out / "latency.png").exists()
    assert set(json.loads((out / MANIFEST).read_text())["files"]) == {p.name for p in out.iterdir()} - {MANIFEST}
    # a report of other rows: the latency plot it wrote is stale and goes; a user's file stays
    (out / "readme.txt").write_text("mine")
    assert _report_cli([FIXTURE, "--out", out]).returncode == 0
    assert not (out / "latency.png").exists() and (out / "readme.txt").read_text() == "mine"
    assert "latency.png" not in json.loads((out / MANIFEST).read_text())["files"]
    # now a latency.png is the user's: the next report of the same rows neither deletes nor lists it
    (out / "latency.png").write_bytes(b"my latency plot")
    assert _report_cli([FIXTURE, "--out", out, "--format", "html"]).returncode == 0
    assert (out / "latency.png").read_bytes() == b"my latency plot"
    # and once the user's, a report that would draw it is refused, naming it
    r = _report_cli([inference, "--out", out], text=True)
    assert r.returncode == 2 and "latency.png" in r.stderr and r.stderr.count("\n") == 1
    assert (out / "latency.png").read_bytes() == b"my latency plot"
    # report.md from the first formats stays the report's own across --format changes
    assert _report_cli([FIXTURE, "--out", out, "--format", "md"]).returncode == 0
    files = set(json.loads((out / MANIFEST).read_text())["files"])
    assert {"report.md", "report.html", "throughput.png"} <= files and "latency.png" not in files
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_every_example_report_folder_is_the_reports_own():
    """The examples can be rebuilt where they are (README's commands) without refusal."""
    import json

    from bench.report.output import MANIFEST, check_out

    for folder in sorted((REPO / "results" / "examples").glob("*/report")):
        owned = set(json.loads((folder / MANIFEST).read_text())["files"])
        check_out(folder, owned)
        # every file but the manifest and the browser's screenshots (bench.report.browser)
        assert owned == {p.name for p in folder.iterdir() if p.name != MANIFEST and not p.name.startswith("screenshot-")}


def _md_tables(md):
    """Each markdown table line's count of unescaped pipes, by table (a run of `|` lines)."""
    import re

    blocks, cur = [], []
    for line in md.split("\n"):
        if line.startswith("|"):
            cur.append(len(re.findall(r"(?<!\\)\|", line.replace("\\\\", ""))))
        elif cur:
            blocks.append(cur)
            cur = []
    return blocks


def _assert_literal_markdown(md):
    import re

    assert "<" not in md  # no tag, no autolink: every < from a cell is &lt;
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", md)
    assert not re.search(r"(?<!\\)\$", md.replace("\\\\", ""))  # every $ escaped: no math
    assert not re.search(r"(?<!\\)\]\(javascript", md) and "**b**" not in md and "~~s~~" not in md
    for counts in _md_tables(md):
        assert len(set(counts)) == 1, counts  # no row broke out of its table or gained a cell


def _assert_escaped_html(page):
    import re

    from test_report_page import Page

    low = page.lower()
    assert not any(t in low for t in _TAGS)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\r]", page)
    assert not {"script", "iframe", "object", "svg"} & Page(page).tags
    assert Page(page).refs == []  # the only <img> are the plots, data URIs


def test_markdown_cells_are_literal_text():
    from bench.report.render import markdown_table

    t = pd.DataFrame({"model": ["<script>alert(1)</script>", "a\rb|c", "x\ny", "$x^2$", "[l](javascript:x)",
                                "mobilenet_v2", "_em_", "400.0 [390.0, 410.0]"], "n": [1.0] * 8})
    md = markdown_table(t)
    _assert_literal_markdown(md)
    assert md.count("\n") == 2 + len(t)  # one line per row
    assert "| mobilenet_v2 |" in md and "| 400.0 [390.0, 410.0] |" in md and "| \\_em\\_ |" in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "a\\\\x0db\\|c" in md and "\\$x^2\\$" in md


def test_hostile_text_in_every_text_column_renders_escaped_in_both_formats(tmp_path):
    """Each hostile string in every text column at once: once in an ok row (so that it reaches
    titles, tables, findings and plots), once in a row whose status is that string too."""
    from bench.results.columns import COLUMN_TYPES

    text_cols = [c for c, kind in COLUMN_TYPES.items() if kind == "str"]
    rows = []
    for h in HOSTILE:
        rows.append(_base_row(**{c: h for c in text_cols if c != "status"}))
        rows.append(_base_row(**{c: h for c in text_cols}))
    rows.append(_base_row(model="resnet18"))  # and a plain row beside them
    csv = _write_rows(tmp_path / "hostile.csv", rows)
    assert len(load_results([csv])) == len(rows)  # every hostile cell stayed in its row
    out = tmp_path / "rep"
    r = _report_cli([csv, "--out", out], text=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    md = (out / "report.md").read_bytes().decode("utf-8")
    page = (out / "report.html").read_bytes().decode("utf-8")
    _assert_literal_markdown(md)
    _assert_escaped_html(page)
    assert "could not be made" not in md  # every part was made, none fell back to a note
    for shown in ("=SUM(A1)", "@cmd", "[x\\](javascript:alert(1))", "&lt;script&gt;", "\\$x^{\\$", "a\\\\x0db",
                  "m\\\\u2028n\\\\u202eo"):
        assert shown in md, shown
    for shown in ("=SUM(A1)", "@cmd", "&lt;script&gt;alert(1)&lt;/script&gt;", "a\\x0db", "$x^{$", "j\\x00k\\x85l"):
        assert shown in page, shown


def _odd_rows():
    """Rows whose cells the schema allows but that no plot or ratio can use as they are."""
    no_ips = {"images_per_sec_median": None, "images_per_sec_median_ci95_low": None,
              "images_per_sec_median_ci95_high": None}
    return {
        "no-images-per-sec-in-a-family": ([_base_row(model="vgg11", **no_ips), _base_row(model="vgg13", **no_ips),
                                           _base_row(model="resnet18")], "no finite images/sec"),
        "probe-without-batch": ([_base_row(batch_size=None, find_max_batch=True, memory_cap_gb=1.0, status="oom"),
                                 _base_row(batch_size=8, find_max_batch=True, memory_cap_gb=1.0,
                                           peak_mem_bytes=None)], "probe without a batch size"),
        "replicas-0": ([_base_row(strategy="mirrored", replicas=0), _base_row()], "fewer than one replica"),
        "negative-batch": ([_base_row(batch_size=-8)], "batch size is not positive"),
        "zero-batch-inference": ([_base_row(batch_size=0, mode="inference", latency_p50_ms=1.0, latency_p99_ms=2.0)],
                                 "batch size is not positive"),
        "math-text-model": ([_base_row(model="$x^{$"), _base_row(model="a_b$"), _base_row(model="$\\frac$"),
                             _base_row(model="$x^{$", mode="inference", latency_p50_ms=1.0, latency_p99_ms=2.0),
                             _base_row(model="$x^{$", strategy="$\\alpha", replicas=2, workers=2),
                             _base_row(model="_hidden", data="digits", top1=0.5, top1_by_epoch="0.4;0.5",
                                       epoch_end_s="1;2")], None),
        "accuracy-lists-that-disagree": ([_base_row(data="digits", top1=0.5, top1_by_epoch="0.4;x", epoch_end_s="1"),
                                          _base_row(data="digits", top1=0.5, top1_by_epoch="0.4;0.5",
                                                    epoch_end_s="1", batch_size=16)],
                                         "not two equally long lists"),
        "zero-and-infinite-timing": ([_base_row(images_per_sec_median=float("inf")),
                                      _base_row(batch_size=16, images_per_sec_median=0.0,
                                                images_per_sec_median_ci95_low=0.0, step_time_median_s=0.0),
                                      _base_row(strategy="horovod", replicas=2, workers=2, gradient_sync=False,
                                                step_time_median_s=0.0),
                                      _base_row(strategy="horovod", replicas=2, workers=2, step_time_median_s=0.0,
                                                latency_p50_ms=-1.0, mode="inference")],
                                     "no finite images/sec"),
        "latency-not-positive": ([_base_row(mode="inference", latency_p50_ms=0.0, latency_p99_ms=-1.0)],
                                 "latency is not positive"),
    }


@pytest.mark.parametrize("case", list(_odd_rows()), ids=str)
def test_every_schema_legal_cell_renders_and_unplottable_rows_are_named(tmp_path, case):
    rows, note = _odd_rows()[case]
    df = load_results([_write_rows(tmp_path / "odd.csv", rows)])
    files = build_report(df, tmp_path / "rep", ["md", "html"])
    md, page = (tmp_path / "rep" / "report.md").read_text("utf-8"), (tmp_path / "rep" / "report.html").read_text("utf-8")
    assert {"report.md", "report.html"} <= {f.name for f in files}
    assert "could not be made" not in md + page  # handled, not caught
    if note:
        assert note in md and note in page
    for png in (tmp_path / "rep").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_math_text_names_are_drawn_as_they_are():
    from bench.report.plots import throughput_figure

    fig = throughput_figure(load_results([FIXTURE]).assign(model="$x^{$"))
    import io

    fig.savefig(io.BytesIO(), format="png")  # math text would be parsed here, and fail
    labels = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert labels == {"$x^{$"}


def _latin1_locale(tmp_path_factory):
    import shutil as sh

    if not sh.which("localedef"):
        return None
    d = tmp_path_factory.mktemp("locale")
    r = subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1", str(d / "en_US.ISO-8859-1")],
                       capture_output=True)
    return {"LOCPATH": str(d), "LC_ALL": "en_US.ISO-8859-1"} if (d / "en_US.ISO-8859-1").exists() else None


LOCALES = {"C": {"LC_ALL": "C"}, "ascii": {"LC_ALL": "C", "PYTHONUTF8": "0"}, "latin1": "latin1"}


@pytest.mark.parametrize("loc", list(LOCALES), ids=str)
def test_every_file_is_utf8_in_any_locale(tmp_path, tmp_path_factory, loc):
    env = LOCALES[loc]
    if env == "latin1":
        env = _latin1_locale(tmp_path_factory)
        if env is None:
            pytest.skip("no en_US ISO-8859-1 locale can be made here (localedef)")
    probe = subprocess.run([sys.executable, "-c", "import locale; print(locale.getpreferredencoding(False))"],
                           env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert probe.stdout.strip().lower().replace("-", "") == {"C": "utf8", "ascii": "ansi_x3.41968",
                                                             "latin1": "iso88591"}[loc].replace("-", "")
    csv = _write_rows(tmp_path / "runs.csv", [_base_row(model="café×", hostname="hôte—Ω", error="ü"),
                                              _base_row(model="résnet", status="failed", error="naïve → ∞")])
    out = tmp_path / "rep"
    r = _report_cli([csv, "--out", out], env=env)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr[-3000:]
    page = (out / "report.html").read_bytes().decode("utf-8")  # UTF-8, as it declares
    assert '<meta charset="utf-8">' in page and "café×" in page and "hôte—Ω" in page and "naïve → ∞" in page
    md = (out / "report.md").read_bytes().decode("utf-8")
    assert "café×" in md and "naïve → ∞" in md
    c = _report_cli(["--compare", csv, csv], env=env)  # the table goes to stdout, in its encoding
    assert c.returncode == 0 and b"Traceback" not in c.stderr and b"caf" in c.stdout, c.stderr[-2000:]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real ENOSPC part way through a report."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_a_full_disk_leaves_the_folder_as_it_was(tiny_disk):
    out = tiny_disk / "rep"
    r = _report_cli([FIXTURE, "--out", out], text=True)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and list(tiny_disk.iterdir()) == []  # no half-written file, no folder it made
    # a folder with an earlier, smaller report keeps it whole
    small = _write_rows(tiny_disk.parent / "small.csv", [_base_row(status="failed", error="x")])
    assert _report_cli([small, "--out", out, "--format", "md"]).returncode == 0
    before = _listing(out)
    (tiny_disk / "filler").write_bytes(b"\0" * 40_000)
    r = _report_cli([FIXTURE, "--out", out], text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "No space left" in r.stderr, r.stderr
    assert _listing(out) == before


def test_a_throughput_plot_of_very_many_settings_names_those_it_leaves_out(tmp_path):
    from bench.report.plots import MAX_PANELS

    n = MAX_PANELS + 5  # unbounded, some 350 panels make an image taller than matplotlib draws (2**16 px)
    rows = [_base_row(width=round(0.01 * (i + 1), 2)) for i in range(n)]
    files = build_report(load_results([_write_rows(tmp_path / "many.csv", rows)]), tmp_path / "rep", ["md"])
    md = (tmp_path / "rep" / "report.md").read_text("utf-8")
    assert "throughput.png" in {f.name for f in files} and "could not be made" not in md
    assert md.count(f"not plotted: the plot shows the first {MAX_PANELS} settings") == n - MAX_PANELS


def test_the_scaling_plot_draws_one_line_per_setting():
    """A column added to the scaling table (its test against the baseline: p_value, verdict, ...)
    must not split each line into single points, which drew an empty plot."""
    from bench.report.plots import scaling_figure
    from bench.report.tables import scaling_efficiency

    df = load_results([REPO / "results" / "examples" / "sweep" / "runs.csv"])
    eff = scaling_efficiency(df)
    # a line for each setting measured at more than one replica count
    expected = int((eff.groupby(["model", "strategy", "batch_size"])["replicas"].nunique() > 1).sum())
    assert expected == 6
    labels = scaling_figure(df).axes[0].get_legend_handles_labels()[1]
    assert len(labels) == expected, labels


def test_images_per_joule_stands_beside_images_per_sec_only_where_rows_measured_energy(tmp_path):
    from bench.report.tables import energy_table

    plain = [{"model": "vgg13", "batch_size": 8, "images_per_sec_median": 100.0, "energy_source": "none"}]
    df = _rows_csv(tmp_path / "none.csv", [dict(r) for r in plain])
    assert energy_table(df).empty
    build_report(df, tmp_path / "rep-none")
    assert "## Energy" not in (tmp_path / "rep-none" / "report.md").read_text()

    measured = {"model": "resnet18", "batch_size": 16, "images_per_sec_median": 400.0, "energy_source": "nvidia-smi",
                "power_mean_w": 250.0, "energy_per_step_j": 10.0, "images_per_joule": 1.6, "energy_samples": 12}
    df = _rows_csv(tmp_path / "some.csv", [dict(r) for r in plain] + [dict(measured)])
    (row,) = energy_table(df).to_dict("records")
    assert row["model"] == "resnet18" and row["images_per_sec"] == 400.0 and row["images_per_joule"] == 1.6
    assert row["power_mean_w"] == 250.0 and row["energy_source"] == "nvidia-smi"
    build_report(df, tmp_path / "rep-some")
    md = (tmp_path / "rep-some" / "report.md").read_text()
    assert "## Energy" in md and "images_per_joule" in md
