"""The configuration schema: one home for every option's flag, type, bounds, key role and CSV
column, and one configuration key used by sweep resume, the report and --compare."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from bench.config.key import TOPOLOGY_KEY, config_key
from bench.config.parse import build_parser, parse_args
from bench.config.schema import CONFIG_COLUMNS, KEY_FIELDS, RunConfig, schema
from bench.errors import BenchInputError
from bench.results.columns import COLUMN_TYPES, CONFIG
from bench.results.load import load_results
from bench.results.row import Outcome, Topology, build_row
from bench.results.store import append_row

# The columns of schema 1, as rows had them before the schema moved into RunConfig.
V1_COLUMNS = (
    "schema_version run_id timestamp_utc source git_commit git_dirty hostname cpu_model cpu_count gpu_names "
    "python_version tf_version keras_version horovod_version model strategy data batch_size num_classes "
    "image_size steps warmup_steps epochs target_accuracy width precision xla optimizer lr momentum "
    "weight_decay augment normalize seed scale_lr lr_warmup_epochs threads cpu_replicas collective_timeout "
    "params gflops_per_image workers replicas per_replica_batch global_batch compile_s timed_steps "
    "step_time_mean_s step_time_median_s step_time_p90_s step_time_min_s step_time_max_s step_time_std_s "
    "step_time_ci95_low_s step_time_ci95_high_s step_time_median_ci95_low_s step_time_median_ci95_high_s "
    "step_time_jitter_s rank_step_time_means_s images_per_sec images_per_sec_median images_per_sec_ci95_low "
    "images_per_sec_ci95_high images_per_sec_median_ci95_low images_per_sec_median_ci95_high "
    "images_per_sec_per_replica images_per_sec_jitter tflops final_loss train_accuracy top1 top5 epochs_run "
    "target_reached time_to_target_s top1_by_epoch epoch_end_s wall_s status error").split()


SCHEMA_3_ADDED = ["jax_version", "jaxlib_version", "device_kind", "init_weights_sha256", "backend", "init_weights"]
SCHEMA_4_ADDED = ["mode", "find_max_batch", "memory_cap_gb", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms",
                  "latency_p99_ms", "latency_per_image_ms", "peak_mem_bytes", "mem_source", "mem_estimate_bytes",
                  "data_wait_ms", "profile_steps", "trace_dir", "all_reduce", "hvd_compression", "hvd_fusion_mb", "hvd_cycle_ms"]
SCHEMA_5_ADDED = ["form", "gradient_sync", "hvd_hierarchical", "hvd_autotune", "hvd_timeline", "all_reduce_pack_mb",
                  "hvd_negotiate_ms", "hvd_allreduce_ms", "hvd_queue_ms", "hvd_autotune_best"]
SCHEMA_6_ADDED = ["process_peak_mem_bytes"]
SCHEMA_7_ADDED = ["gradient_bytes", "hosts", "link_gbps", "cores_per_replica", "transport", "net_tx_bytes",
                  "net_rx_bytes"]
SCHEMA_8_ADDED = ["pred_algorithm", "pred_gpus_per_node", "pred_intra_gbps", "pred_compute_s", "pred_allreduce_s",
                  "pred_step_low_s", "pred_step_high_s", "pred_efficiency", "pred_efficiency_low",
                  "pred_efficiency_high", "pred_comm_share", "pred_basis"]
SCHEMA_9_ADDED = ["target_ci", "max_steps", "warmup_dropped", "warmup_rule", "target_met", "step_time_median_ci95_rel",
                  "repeats", "repeat_index", "repeat_group"]
SCHEMA_10_ADDED = ["data_workers", "label_offset", "max_bad_images", "energy_interval_ms", "jax_maxpool", "jax_batchnorm",
                   "xla_autotune", "xla_command_buffer", "preprocess", "bad_images", "energy_source", "power_mean_w",
                   "energy_per_step_j", "images_per_joule", "energy_samples"]


def test_columns_are_those_of_before_plus_the_backends_and_memory():
    """Schemas 3 to 10 only add columns (3: the backend, its versions, the device kind, the
    initial weights; 4: the mode, latency, memory and max-batch probes; 5: the diagnostic and
    communication options, Horovod's timeline and autotuner; 6: the process's own peak memory; 7: where
    the replicas ran, the gradient bytes and the interfaces' bytes; 8: a prediction's own; 9: the
    warmup found, the CI target and repeats; 10: energy over the timed steps, the input pipeline's
    parallelism, the streamed images' columns and the JAX step's switches);
    every earlier column keeps its name and order."""
    cols = list(COLUMN_TYPES)
    added = (SCHEMA_3_ADDED + SCHEMA_4_ADDED + SCHEMA_5_ADDED + SCHEMA_6_ADDED + SCHEMA_7_ADDED + SCHEMA_8_ADDED
             + SCHEMA_9_ADDED + SCHEMA_10_ADDED)
    assert [c for c in cols if c not in added] == V1_COLUMNS
    assert sorted(set(cols) - set(V1_COLUMNS)) == sorted(added)


def test_parser_options_come_from_the_schema():
    dests = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert dests == {name for name, o in schema().items() if o.cli}
    assert list(CONFIG) == CONFIG_COLUMNS == [n for n, o in schema().items() if o.column]
    assert {COLUMN_TYPES[c] for c in CONFIG_COLUMNS} <= {"int", "float", "bool", "str"}
    for name in KEY_FIELDS:
        assert schema()[name].column, f"{name} identifies a configuration but is not recorded"


def test_every_field_parses_its_own_default_back():
    """The CLI reproduces any default configuration: each field's flag takes its default value."""
    cfg = RunConfig(model="vgg11")
    for name, o in schema().items():
        value = getattr(cfg, name)
        if not o.cli or o.positional or value is None or o.action != "value":
            continue
        parsed = parse_args(["vgg11", "--" + name.replace("_", "-"), str(value)])
        assert getattr(parsed, name) == value, name


@pytest.mark.parametrize("flag,value", [("--width", "inf"), ("--lr", "nan"), ("--lr", "inf"),
                                        ("--weight-decay", "inf"), ("--collective-timeout", "inf"),
                                        ("--seed", "99999999999999999999"), ("--batch-size", "1.5")])
def test_non_finite_and_out_of_range_values_are_refused(flag, value):
    with pytest.raises(BenchInputError, match=value if value != "1.5" else "integer"):
        parse_args(["vgg11", flag, value])


def test_lr_defaults_follow_the_optimizer_and_the_mode():
    assert RunConfig(model="vgg11").lr == 1e-3
    assert RunConfig(model="vgg11", optimizer="sgd").lr == 1e-3  # throughput: finite on every model
    assert RunConfig(model="vgg11", optimizer="sgd", epochs=2).lr == 0.1  # accuracy mode: the course's recipe
    assert parse_args(["vgg11", "--optimizer", "sgd", "--epochs", "1", "--data", "digits"]).lr == 0.1
    assert parse_args(["vgg11", "--optimizer", "sgd", "--lr", "0.5"]).lr == 0.5


def test_data_dir_is_only_for_cifar100(tmp_path):
    with pytest.raises(BenchInputError, match="data=digits"):
        parse_args(["vgg11", "--data", "digits", "--data-dir", str(tmp_path)])


def _row(cfg: RunConfig, ips: float) -> dict:
    row = build_row(cfg.resolved(has_gpu=False), Outcome("ok"), topology=Topology(1, 1, 8, 8))
    return {**row, "images_per_sec_median": ips, "images_per_sec_median_ci95_low": ips * 0.99,
            "images_per_sec_median_ci95_high": ips * 1.01}


def test_the_key_tells_rows_apart_by_every_key_field_and_nothing_else(tmp_path):
    base = RunConfig(model="vgg11", batch_size=8)
    k = config_key(_row(base, 1.0))
    assert config_key(base.resolved(has_gpu=False), workers=1, replicas=1) == k  # a config and its row agree
    for name in KEY_FIELDS:
        if name in ("model", "strategy", "backend", "data", "precision", "optimizer", "mode", "all_reduce",
                    "hvd_compression", "profile_steps", "form"):
            continue  # choices: covered by lr below and the strategy registry tests
        value = getattr(base.resolved(has_gpu=False), name)
        allowed = schema()[name].allowed()
        if allowed and value in allowed:  # a choice (the JAX step's switches): another of them
            other = next(a for a in allowed if a != value)
        else:
            other = (not value) if isinstance(value, bool) or value is None and name == "xla" else \
                (0.5 if value is None else value * 2 + 1)
        changed = dataclasses.replace(base, **{name: other})
        assert config_key(_row(changed, 1.0)) != k, name
    # environment and measurement are not part of it
    assert config_key({**_row(base, 1.0), "threads": 7, "collective_timeout": 5.0, "images_per_sec": 3}) == k
    assert len(k) == len(KEY_FIELDS) + len(TOPOLOGY_KEY)


def test_rows_differing_only_in_lr_are_two_configurations_everywhere(tmp_path):
    a, b = RunConfig(model="vgg11", batch_size=8, lr=0.1), RunConfig(model="vgg11", batch_size=8, lr=0.01)
    out = tmp_path / "runs.csv"
    append_row(out, _row(a, 100.0))
    append_row(out, _row(b, 50.0))
    df = load_results([out])
    assert df["config_key"].nunique() == 2  # after a CSV round trip the keys still differ ...
    assert config_key(a.resolved(has_gpu=False), workers=1, replicas=1) in set(df["config_key"])  # ... and match
    # sweep resume: ok rows for lr 0.1 and 0.01 make lr 0.01 done, not lr 0.001
    from bench.results.store import read_rows
    from bench.sweep.grid import build_jobs, done_keys
    jobs = build_jobs(["vgg11"], [8], ["single"], [1], {"lr": 0.001}, str(out), 60)
    assert jobs[0].key() not in done_keys(read_rows(out))
    jobs = build_jobs(["vgg11"], [8], ["single"], [1], {"lr": 0.01}, str(out), 60)
    assert jobs[0].key() in done_keys(read_rows(out))
    # the report's latest-row rule and --compare
    from bench.report.tables import compare, latest_ok
    assert len(latest_ok(df)) == 2
    c = compare(df, df)
    assert len(c) == 2 and sorted(c["images_per_sec_old"]) == [50.0, 100.0]


def test_key_of_a_typed_frame_matches_the_raw_rows(tmp_path):
    out = tmp_path / "runs.csv"
    cfg = RunConfig(model="vgg11", batch_size=8, target_accuracy=0.5, epochs=2, data="digits", lr_warmup_epochs=1.5,
                    scale_lr=True)
    append_row(out, _row(cfg, 1.0))
    raw = pd.read_csv(out).iloc[0].to_dict()
    assert config_key(raw) == load_results([out])["config_key"].iloc[0] == config_key(_row(cfg, 1.0))


# ---- resolution: once, in the run layer, from the hardware asked without a framework -------------
@pytest.mark.parametrize("backend,env,gpu", [
    ("tensorflow", {}, True),
    ("tensorflow", {"CUDA_VISIBLE_DEVICES": ""}, False),     # CUDA hides every GPU
    ("tensorflow", {"CUDA_VISIBLE_DEVICES": "-1"}, False),
    ("tensorflow", {"CUDA_VISIBLE_DEVICES": "1"}, True),
    ("tensorflow", {"CUDA_VISIBLE_DEVICES": "5"}, False),    # no such GPU: CUDA stops at the first invalid entry
    ("jax", {"JAX_PLATFORMS": "cpu"}, False),
    ("jax", {"JAX_PLATFORMS": "cuda,cpu"}, True),
])
def test_prepare_resolves_the_defaults_once_from_the_machine(monkeypatch, backend, env, gpu):
    import bench.procs as hardware
    from bench.runner.validate import prepare

    monkeypatch.setattr(hardware, "gpu_count", lambda: 2)
    for name in ("CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = prepare(parse_args(["vgg11", "--backend", backend]))
    assert cfg.is_resolved and cfg == cfg.resolved(has_gpu=gpu)
    assert cfg.batch_size == (128 if gpu else 32) and cfg.xla == (gpu or backend == "jax")
    monkeypatch.setattr(hardware, "gpu_count", lambda: 1 / 0)  # resolving again asks nothing
    assert prepare(cfg) is cfg


def test_a_run_refuses_an_unresolved_configuration(tmp_path):
    """execute and open_session take the configuration prepare returned; they fill no default themselves."""
    from bench.runner.execute import execute
    from bench.runner.session import open_session

    cfg = parse_args(["vgg11", "--output", str(tmp_path / "r.csv")])
    for build in (execute, open_session):
        with pytest.raises(ValueError, match="not resolved"):
            build(cfg)
    assert not (tmp_path / "r.csv").exists()


def test_the_configuration_layer_imports_no_backend():
    """Cross-package checks (is the backend installed?) live in the run layer, bench.runner.validate."""
    import subprocess
    import sys

    from helpers import REPO

    code = ("import sys, bench.config.parse, bench.config.key; "
            "print(sorted(m for m in sys.modules if m.startswith(('bench.backends', 'bench.runner', 'keras'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
