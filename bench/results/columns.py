"""The CSV schema: every column and its type, the statuses, and the migration of rows written under an older schema."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from bench.config.schema import CONFIG_COLUMNS, JAX_SWITCHES, schema
from bench.errors import Status

# 2: the status of a run whose loss went non-finite is "diverged" (was "nan")
# 3: the backend (older rows are TensorFlow's), its versions, the device kind, the initial weights
# 4: the mode (older rows trained), latency percentiles, input wait, peak and estimated memory, max-batch probes
# 5: diagnostic runs without gradient sync, Horovod's hierarchical all-reduce, autotune and
#    timeline (per-step negotiation, all-reduce and queue times), tf.distribute's pack size;
#    the model's form (CIFAR or the paper's)
# 6: the process's own peak memory since start-up, beside the timed steps' peak
# 7: where the replicas ran (hosts, link, cores per replica), the bytes the host's interfaces
#    carried during the timed steps, and the gradient bytes a training step all-reduces
# 8: predictions (`cnnbench predict`, source=prediction): the algorithm, the nodes' devices and
#    links, and the predicted step's band, efficiency and communication share
# 9: the warmup found rather than assumed and the timing until the CI is tight: warmup_dropped,
#    warmup_rule, target_met, step_time_median_ci95_rel (older rows read them empty)
# 9: repeats in fresh processes: the row's repeat index and group (the configuration column
#    `repeats` comes with them); older rows read them empty (one plain run)
# 10: energy over the timed steps (bench.measure.energy): energy_source, power_mean_w, energy_per_step_j,
#    images_per_joule, energy_samples, and the configuration column energy_interval_ms (older rows
#    read them empty: not measured)
# 10: also the input pipeline's parallelism (data_workers, a configuration column) and --mode input rows,
#    the pipeline alone (model empty; their images/sec is the input ceiling); older rows read
#    data_workers empty (the pipeline's default)
# 10: also real images streamed (imagefolder, tfrecord): the row's preprocess and bad_images, and the
#    configuration columns data_workers, label_offset and max_bad_images (older rows read them empty)
# 10: also the JAX step's switches, configuration columns: jax_maxpool, jax_batchnorm, xla_autotune,
#    xla_command_buffer (older rows ran the plain path: they read plain)
SCHEMA_VERSION = 10
# a row that no run measured: `cnnbench predict` made it (bench.results.load keeps such rows apart)
PREDICTION_SOURCE = "prediction"


def predicted(df: Any) -> Any:
    """Which rows of a results DataFrame are predictions, not measurements (a boolean Series)."""
    import pandas as pd

    if "source" not in df:
        return pd.Series(False, index=df.index)
    return df["source"].astype(object).eq(PREDICTION_SOURCE)


# a row of --mode input: the pipeline alone, no model (bench.results.load keeps such rows apart)
INPUT_MODE = "input"


def input_only(df: Any) -> Any:
    """Which rows of a results DataFrame timed the input pipeline alone (a boolean Series)."""
    import pandas as pd

    if "mode" not in df:
        return pd.Series(False, index=df.index)
    return df["mode"].astype(object).eq(INPUT_MODE)
# Every column and its type (int, float, bool, str, time), in CSV order. The configuration
# columns and their types come from RunConfig's schema (bench.config).
PROVENANCE = {"schema_version": "int", "run_id": "str", "timestamp_utc": "time", "source": "str",
              "git_commit": "str", "git_dirty": "bool", "hostname": "str", "cpu_model": "str",
              "cpu_count": "int", "gpu_names": "str", "python_version": "str", "tf_version": "str",
              "keras_version": "str", "horovod_version": "str", "jax_version": "str", "jaxlib_version": "str",
              "device_kind": "str", "init_weights_sha256": "str"}
CONFIG = {name: schema()[name].kind for name in CONFIG_COLUMNS}
MODEL = {"params": "int", "gflops_per_image": "float", "gradient_bytes": "int"}
TOPOLOGY = {"workers": "int", "replicas": "int", "per_replica_batch": "int", "global_batch": "int"}
PLACEMENT = {"hosts": "int", "link_gbps": "float", "cores_per_replica": "float", "transport": "str"}
TIMING = {"compile_s": "float", "timed_steps": "int",
          **{c: "float" for c in ("step_time_mean_s", "step_time_median_s", "step_time_p90_s", "step_time_min_s",
                                  "step_time_max_s", "step_time_std_s", "step_time_ci95_low_s",
                                  "step_time_ci95_high_s", "step_time_median_ci95_low_s",
                                  "step_time_median_ci95_high_s", "step_time_jitter_s")},
          "rank_step_time_means_s": "str",
          **{c: "float" for c in ("images_per_sec", "images_per_sec_median", "images_per_sec_ci95_low",
                                  "images_per_sec_ci95_high", "images_per_sec_median_ci95_low",
                                  "images_per_sec_median_ci95_high", "images_per_sec_per_replica",
                                  "images_per_sec_jitter", "tflops")}}
# how the timed steps were chosen (bench.measure.steady): the warmup left out, the rule that set it,
# whether --target-ci's precision was reached, and the precision reached
STEADY = {"warmup_dropped": "int", "warmup_rule": "str", "target_met": "bool", "step_time_median_ci95_rel": "float"}
LATENCY = {c: "float" for c in ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
                                 "latency_per_image_ms")}
INPUT = {"data_wait_ms": "float"}
# the input pipeline's preprocessing (bench.data.preprocess's names) and the corrupt images it skipped
IMAGES = {"preprocess": "str", "bad_images": "int"}
PROFILE = {"trace_dir": "str"}
# from Horovod's timeline (mean ms per timed step, the chief's view) and autotuner
COMM = {"hvd_negotiate_ms": "float", "hvd_allreduce_ms": "float", "hvd_queue_ms": "float", "hvd_autotune_best": "str",
        "net_tx_bytes": "int", "net_rx_bytes": "int"}
MEMORY = {"peak_mem_bytes": "int", "process_peak_mem_bytes": "int", "mem_source": "str", "mem_estimate_bytes": "int"}
ACCURACY = {"final_loss": "float", "train_accuracy": "float", "top1": "float", "top5": "float",
            "epochs_run": "int", "target_reached": "bool", "time_to_target_s": "float", "top1_by_epoch": "str",
            "epoch_end_s": "str", "wall_s": "float"}
# a prediction's own (bench.predict): step_time_median_s is the band's midpoint, images/sec from it
PREDICTION = {"pred_algorithm": "str", "pred_gpus_per_node": "int", "pred_intra_gbps": "float",
              "pred_compute_s": "float", "pred_allreduce_s": "float", "pred_step_low_s": "float",
              "pred_step_high_s": "float", "pred_efficiency": "float", "pred_efficiency_low": "float",
              "pred_efficiency_high": "float", "pred_comm_share": "float", "pred_basis": "str"}
# which of a --repeats N group this row is (index from 0) and the group's id: not configuration
# (repeats of one configuration share its key), so not among CONFIG's columns
REPEAT = {"repeat_index": "int", "repeat_group": "str"}
# the job's energy over the timed window (bench.measure.energy): its source (none: not measured),
# the mean power of every device it covers together, joules per step, images per joule, and the
# fewest samples a device had inside the window
ENERGY = {"energy_source": "str", "power_mean_w": "float", "energy_per_step_j": "float", "images_per_joule": "float",
          "energy_samples": "int"}
OUTCOME = {"status": "str", "error": "str"}
COLUMN_TYPES: dict[str, str] = {**PROVENANCE, **CONFIG, **MODEL, **TOPOLOGY, **PLACEMENT, **TIMING, **STEADY, **LATENCY, **INPUT, **IMAGES, **PROFILE, **COMM, **MEMORY,
                                 **ACCURACY, **PREDICTION, **REPEAT, **ENERGY, **OUTCOME}
COLUMNS = list(COLUMN_TYPES)
STATUSES = tuple(s.value for s in Status)
HEADER_MARKS = ["schema_version", "model", "status"]  # every cnnbench header, of any schema, has these
REQUIRED = [*HEADER_MARKS, "strategy", "batch_size"]  # what the report needs
OLD_STATUS_NAMES = {"nan": "diverged"}  # schema 1 called a non-finite loss "nan", which CSV readers take for missing
# what rows of older schemas meant by the columns they lack: TensorFlow before 3; training, and the
# strategies' own all-reduce without compression, before 4; gradients synced, none of Horovod's
# hierarchical all-reduce, autotune or timeline, and the automatic form, before 5; one host before 7;
# the JAX step as Keras and XLA lower it (every switch plain) before 10
OLD_DEFAULTS = {"backend": "tensorflow", "mode": "train", "all_reduce": "auto", "hvd_compression": "none",
                "gradient_sync": True, "hvd_hierarchical": False, "hvd_autotune": False, "hvd_timeline": False,
                "form": "auto", "hosts": 1, **{name: "plain" for name in JAX_SWITCHES}}


def migrate(df: Any) -> Any:
    """Rows of any schema in the current schema's terms, in place: `df` a pandas DataFrame of a
    cnnbench CSV (raw text cells, or typed), as the store rewrites it and as both readers read it.
    Old status names get their new ones; a column an older schema lacks, or left empty, gets
    what those rows meant by it."""
    if "status" in df:
        df["status"] = df["status"].replace(OLD_STATUS_NAMES)
    if "model" not in df:  # not a cnnbench table: nothing to say about its columns
        return df
    for col, value in OLD_DEFAULTS.items():
        if col not in df:
            df[col] = value
            continue
        missing = df[col].isna() | (df[col].astype(object) == "")
        if missing.any():  # an all-empty column reads as float, which holds no text or bool
            column = df[col].astype(object) if df[col].dtype.kind == "f" else df[col]
            df[col] = column.where(~missing, value)
    return df


@dataclasses.dataclass(frozen=True)
class Table:
    """One kind of results file: its columns and their types, the columns every header of it has
    (what tells it from any other CSV), its schema version, and how rows of older schemas read."""
    name: str
    column_types: Mapping[str, str]
    header_marks: tuple[str, ...]
    schema_version: int
    old_defaults: Mapping[str, Any]
    migrate: Callable[[Any], Any]

    @property
    def columns(self) -> list[str]:
        return list(self.column_types)


# runs: one row per benchmark run (bench/run.py, sweeps, pytest --benchmark)
RUNS = Table("results", COLUMN_TYPES, tuple(HEADER_MARKS), SCHEMA_VERSION, OLD_DEFAULTS, migrate)

# collectives: one row per message size of `python -m bench.collectives` (bench.measure.collectives), as
# nccl-tests reports an all-reduce: its time across the ranks, algorithm and bus bandwidth
COLLECTIVES_SCHEMA_VERSION = 1
COLLECTIVE_CONFIG = ("strategy", "backend", "cpu_replicas", "all_reduce", "all_reduce_pack_mb", "hvd_compression",
                     "hvd_fusion_mb", "hvd_cycle_ms", "hvd_hierarchical", "threads", "collective_timeout")
COLLECTIVE_COLUMN_TYPES: dict[str, str] = {
    **PROVENANCE,
    **{name: CONFIG[name] for name in COLLECTIVE_CONFIG},
    "op": "str", "dtype": "str", "size_bytes": "int", "elements": "int",
    "workers": "int", "ranks": "int", "hosts": "int", "link_gbps": "float", "cores_per_replica": "float",
    "transport": "str",
    "warmup_iters": "int", "iters": "int",
    **{c: "float" for c in ("time_median_s", "time_median_ci95_low_s", "time_median_ci95_high_s", "time_mean_s",
                            "time_min_s", "time_max_s", "algbw_gbs", "busbw_gbs", "busbw_ci95_low_gbs",
                            "busbw_ci95_high_gbs")},
    "net_tx_bytes": "int", "net_rx_bytes": "int",
    **OUTCOME,
}
COLLECTIVES = Table("collectives", COLLECTIVE_COLUMN_TYPES, ("schema_version", "op", "status"),
                    COLLECTIVES_SCHEMA_VERSION, {}, migrate)
