"""--mode input: the input pipeline alone, no model (real runs on both backends), its bad input,
its sweep, and the report's Input pipeline section and input-bound finding (from real rows, and
from real rows with their figures set to test the rule's edges)."""
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from helpers import REPO, run_cli, run_once

from bench.config.key import config_key
from bench.results.columns import COLUMNS, SCHEMA_VERSION
from bench.results.load import apart, load_results
from bench.results.store import read_rows

INPUT = ["--mode", "input", "--data", "digits", "--batch-size", "8", "--no-progress"]
# what a tiny training run of the same pipeline adds (the report pairs it with the input row)
TRAIN = ["lenet5", "--data", "digits", "--batch-size", "8", "--steps", "20", "--no-progress"]


def _one_row(csv):
    df = read_rows(csv)
    assert list(df.columns) == COLUMNS and len(df) == 1
    return df.iloc[0]


# ---- real runs ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend,extra,replicas", [("tensorflow", [], 1), ("jax", [], 1),
                                                    ("tensorflow", ["--strategy", "mirrored", "--cpu-replicas", "2",
                                                                    "--data-workers", "1"], 2)])
def test_an_input_run_writes_a_row_of_the_pipeline_alone(tmp_path, backend, extra, replicas):
    out = tmp_path / "runs.csv"
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"} if replicas > 1 and backend == "jax" else None
    r = run_cli(*INPUT, "--backend", backend, *extra, "--output", str(out), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    row = _one_row(out)
    assert row["status"] == "ok", row["error"]
    assert row["schema_version"] == SCHEMA_VERSION and row["mode"] == "input" and row["backend"] == backend
    assert pd.isna(row["model"]) or row["model"] == ""  # no model ran
    for col in ("params", "gflops_per_image", "tflops", "mem_estimate_bytes", "gradient_bytes", "final_loss", "xla"):
        assert pd.isna(row[col]), col
    assert row["replicas"] == replicas and row["global_batch"] == 8 * replicas
    assert row["timed_steps"] >= 100 and row["warmup_rule"] in ("mser5", "mser5-max")
    assert row["images_per_sec_median"] == pytest.approx(8 * replicas / row["step_time_median_s"])
    assert row["images_per_sec_median_ci95_low"] <= row["images_per_sec_median"] <= row["images_per_sec_median_ci95_high"]
    assert 0 < row["latency_p50_ms"] <= row["latency_p90_ms"] <= row["latency_p99_ms"]
    assert row["compile_s"] > 0  # the first batch, timed apart
    # the wait for the batch is part of the step (on JAX the transfer to the devices is the rest)
    assert 0 <= row["data_wait_ms"] <= 1000 * row["step_time_max_s"]
    assert row["peak_mem_bytes"] >= 0 and row["process_peak_mem_bytes"] > 0
    if "--data-workers" in extra:
        assert row["data_workers"] == 1
    else:
        assert pd.isna(row["data_workers"])
    assert "no model" in r.stdout and "first batch" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend,data", [("tensorflow", "tfrecord"), ("jax", "imagefolder")])
def test_the_ceiling_of_a_streamed_set_counts_decoded_cropped_images(tmp_path, backend, data):
    """The streamed sources through the same seam: the row names the preprocessing and the
    workers, no image was bad, and the data folder is left as it was."""
    from helpers import tree_snapshot

    made = tmp_path / "set"
    subprocess.run([sys.executable, "-m", "bench.data.imagenet_like", str(made), "--classes", "2", "--per-class", "4"],
                   check=True, capture_output=True, cwd=REPO)
    data_dir = made / ("folders" if data == "imagefolder" else "tfrecord")
    before = tree_snapshot(made)
    out = tmp_path / "runs.csv"
    extra = ["--label-offset", "1"] if data == "tfrecord" else []
    r = run_cli("--mode", "input", "--data", data, "--data-dir", str(data_dir), *extra, "--image-size", "64",
                "--batch-size", "4", "--data-workers", "1", "--backend", backend, "--no-progress",
                "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    row = _one_row(out)
    assert row["status"] == "ok", row["error"]
    assert row["data"] == data and row["preprocess"] == "inception_crop_flip" and row["bad_images"] == 0
    assert row["data_workers"] == 1 and row["timed_steps"] >= 100 and row["images_per_sec_median"] > 0
    assert tree_snapshot(made) == before


# ---- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,says", [
    (["resnet18", *INPUT], "leave the model out. Received: model=resnet18"),
    ([*INPUT, "--width", "0.5"], "--width needs a model"),
    ([*INPUT, "--precision", "mixed_bf16"], "--precision needs a model"),
    ([*INPUT, "--optimizer", "sgd"], "--optimizer needs a model"),
    ([*INPUT, "--epochs", "1"], "--epochs needs a model"),
    ([*INPUT, "--xla"], "--xla needs a model"),
    # the JAX step's switches shape the model's step: an input row's pipeline pairs with training
    # rows whatever switches they ran with (bench.report.inputs), so none is taken here
    ([*INPUT, "--backend", "jax", "--jax-maxpool", "shifted"], "--jax-maxpool needs a model"),
    ([*INPUT, "--init-weights", "w.weights.h5"], "--init-weights needs a model"),
    ([*INPUT, "--steps", "10"], "--mode input needs --steps >= 100"),
    (["--mode", "input", "--batch-size", "8"], "synthetic has none"),
    (["--data", "digits"], "a model is needed"),
    ([*INPUT, "--data-workers", "-1"], "data_workers must be >= 0 and <= 256. Received: data_workers=-1"),
    ([*INPUT, "--data-workers", "257"], "data_workers must be >= 0 and <= 256. Received: data_workers=257"),
])
def test_bad_input_for_the_mode_is_one_line_exit_2_and_no_row(tmp_path, capsys, argv, says):
    from bench.run import main

    out = tmp_path / "runs.csv"
    assert main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert not out.exists()


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    out = tmp_path / "runs.csv"
    r = run_cli("vgg11", *INPUT, "--output", str(out), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_data_workers_and_the_mode_round_trip_through_the_command_line():
    from bench.config.parse import parse_args

    cfg = parse_args([*INPUT, "--data-workers", "3"])
    assert cfg.model is None and cfg.data_workers == 3
    assert parse_args(cfg.to_argv()) == cfg
    assert parse_args(["vgg11", "--data-workers", "auto"]).data_workers is None


# ---- the sweep ---------------------------------------------------------------------------------------
def test_a_sweep_grids_input_runs_over_data_workers_and_batch_sizes(tmp_path, capsys):
    from bench.sweep.cli import main

    out = tmp_path / "runs.csv"
    assert main(["--batch-sizes", "8,16", "--axis", "data_workers=1,2", "--output", str(out), "--dry-run",
                 "--mode", "input", "--data", "digits"]) == 0
    text = capsys.readouterr().out
    assert "4 configuration(s): 4 to run" in text
    runs = [line for line in text.splitlines() if line.startswith("    ")]
    assert len(runs) == 4 and all("--mode input" in c and "--xla" not in c and "--no-xla" not in c for c in runs)
    assert any("--data-workers 2" in c and "--batch-size 16" in c for c in runs)
    # a model with --mode input is refused, as a run refuses it
    assert main(["--models", "vgg11", "--batch-sizes", "8", "--output", str(out), "--dry-run",
                 "--mode", "input", "--data", "digits"]) == 2
    assert "drop --models" in capsys.readouterr().err


# ---- the report -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """(training only, training and input): a tiny lenet5 training run on digits and an input run
    of the same pipeline, on TensorFlow, in two CSVs (the second holds both rows)."""
    def command(d):
        both = d / "both.csv"
        return ["bash", "-c", f"set -e; {sys.executable} bench/run.py {' '.join(TRAIN)} --output {both} && "
                f"cp {both} {d / 'train.csv'} && {sys.executable} bench/run.py {' '.join(INPUT)} --output {both}"]
    r, folder = run_once(tmp_path_factory, "input-mode-report", command)
    assert r.returncode == 0, r.stderr[-2000:]
    return folder / "train.csv", folder / "both.csv"


@pytest.mark.slow
def test_input_rows_are_kept_apart_and_the_other_sections_do_not_change(rows):
    from bench.report.render import _findings, sections

    train_only, both = rows
    plain, mixed = load_results([train_only]), load_results([both])
    assert len(apart(mixed, "inputs")) == 1 and (mixed["mode"] == "train").all() and len(mixed) == 1
    assert len(apart(plain, "inputs")) == 0
    before = {s.id: s for s in sections(plain)}
    after = {s.id: s for s in sections(mixed)}
    assert before.keys() == after.keys()
    for sid, s in before.items():
        if sid == "input-pipeline":
            continue
        assert len(s.tables) == len(after[sid].tables), sid
        for a, b in zip(s.tables, after[sid].tables):
            pd.testing.assert_frame_equal(a.frame, b.frame)
        assert s.notes == after[sid].notes
    assert [f for f in _findings(mixed)[0] if f.kind != "input"] == _findings(plain)[0]
    assert not before["input-pipeline"].tables and after["input-pipeline"].tables


@pytest.mark.slow
def test_the_section_sets_the_ceiling_beside_training_of_the_same_pipeline(rows, tmp_path):
    from bench.report import inputs
    from bench.report.render import build_report

    df = load_results([rows[1]])
    p = inputs.pairs(df)
    assert len(p) == 1 and p["model"].iloc[0] == "lenet5"
    r = p.iloc[0]
    train, ceiling = df.iloc[0], apart(df, "inputs").iloc[0]
    assert r["ceiling"] == pytest.approx(ceiling["images_per_sec_median"])
    assert r["ratio"] == pytest.approx(train["images_per_sec_median"] / ceiling["images_per_sec_median"])
    assert r["ratio_low"] < r["ratio"] < r["ratio_high"]
    assert r["wait_share"] == pytest.approx(train["data_wait_ms"] / 1000 / train["step_time_mean_s"])
    assert r["verdict"] == inputs.verdict(r["wait_share"], r["ratio"], r["ratio_low"])
    build_report(df, tmp_path, ["md"])
    md = (tmp_path / "report.md").read_text()
    assert "## Input pipeline" in md and "(#input-pipeline)" in md and "the rule:" in md
    assert md.count("| lenet5 |") >= 1


@pytest.mark.slow
def test_another_pipeline_is_not_paired(rows):
    from bench.report import inputs

    df = load_results([rows[1]])
    inp = apart(df, "inputs")
    for col, value in (("batch_size", 16), ("backend", "jax"), ("data_workers", 2), ("augment", True)):
        changed = load_results([rows[1]])
        held = apart(changed, "inputs")
        held[col] = pd.Series([value] * len(held), index=held.index).astype(inp[col].dtype)
        held["config_key"] = [config_key(x) for x in held.to_dict("records")]
        p = inputs.pairs(changed)
        assert len(p) == 1 and p["model"].isna().all(), col
        assert inputs.input_findings(changed) == []


@pytest.mark.parametrize("wait,ratio,low,verdict", [
    (0.06, 0.10, 0.09, "likely input-bound"),     # the step waits more than 5% for its batch
    (0.01, 0.95, 0.92, "likely input-bound"),     # above 90% of the ceiling, CI and all
    (0.01, 0.95, 0.85, "possibly input-bound"),   # above 90%, but the CI reaches below
    (0.05, 0.90, 0.85, "not input-bound"),        # the edges themselves are not "more than"
    (float("nan"), 0.95, float("nan"), "possibly input-bound"),  # no wait timed, no CI: no evidence
    (float("nan"), 0.50, float("nan"), "not input-bound"),
])
def test_the_rule(wait, ratio, low, verdict):
    from bench.report.inputs import verdict as rule

    assert rule(wait, ratio, low) == verdict


def _set(df, train_ips, train_ci, ceiling_ips, ceiling_ci, wait_share):
    """The real rows' figures set by hand (one training row, one input row)."""
    t = df.index[0]
    df.loc[t, "images_per_sec_median"] = train_ips
    df.loc[t, ["images_per_sec_median_ci95_low", "images_per_sec_median_ci95_high"]] = train_ci
    df.loc[t, "step_time_mean_s"] = 8 / train_ips
    df.loc[t, "data_wait_ms"] = 1000 * wait_share * 8 / train_ips
    inp = apart(df, "inputs")
    inp.loc[inp.index[0], "images_per_sec_median"] = ceiling_ips
    inp.loc[inp.index[0], ["images_per_sec_median_ci95_low", "images_per_sec_median_ci95_high"]] = ceiling_ci
    return df


@pytest.mark.slow
@pytest.mark.parametrize("figures,starts", [
    ((950.0, [945.0, 955.0], 1000.0, [995.0, 1005.0], 0.01), "Input-bound training: 1 of 1"),  # near the ceiling
    ((950.0, [700.0, 1200.0], 1000.0, [700.0, 1300.0], 0.01), "Possibly input-bound: 1"),     # CI reaches below
    ((300.0, [290.0, 310.0], 1000.0, [990.0, 1010.0], 0.10), "Input-bound training: 1 of 1"),  # waits 10%
    ((300.0, [290.0, 310.0], 1000.0, [990.0, 1010.0], 0.01), "No training run is input-bound"),
])
def test_the_finding_names_each_input_bound_configuration_and_states_the_rule(rows, figures, starts):
    from bench.report.inputs import input_findings

    df = _set(load_results([rows[1]]), *figures)
    found = input_findings(df)
    assert len(found) == 1 and found[0].section == "input-pipeline"
    text = found[0].text
    assert text.startswith(starts) and "lenet5 (batch 8, single ×1, tensorflow, digits at 32 px" in text
    assert "the rule:" in text and "5%" in text and "90%" in text
    ratio = figures[0] / figures[2]
    assert f"{ratio:.2f}×" in text or f"{ratio:.3g}×" in text


@pytest.mark.slow
def test_a_failed_input_row_is_named_under_the_section(rows, tmp_path):
    from bench.report.render import sections

    csv = tmp_path / "runs.csv"
    shutil.copy(rows[1], csv)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    bad = df[df["mode"] == "input"].copy()
    bad["status"], bad["error"], bad["run_id"] = "failed", "boom", "x"
    pd.concat([df, bad]).to_csv(csv, index=False)
    s = {x.id: x for x in sections(load_results([csv]))}["input-pipeline"]
    assert any("status failed: boom" in n for n in s.notes)


@pytest.mark.slow
def test_a_file_of_input_rows_alone_makes_a_report_of_that_section(rows, tmp_path):
    from bench.report.render import build_report

    csv = tmp_path / "runs.csv"
    df = pd.read_csv(rows[1], dtype=str, keep_default_na=False)
    df[df["mode"] == "input"].to_csv(csv, index=False)
    build_report(load_results([csv]), tmp_path / "report", ["md", "html"])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "0 row(s), 0 ok" in md and "Besides them, 1 input-pipeline row(s)" in md
    assert "## Input pipeline" in md and "## Throughput" not in md
