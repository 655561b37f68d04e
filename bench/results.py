"""Result rows: the CSV schema, provenance, and an atomic, lock-protected append.

A row is whole or absent: each append rewrites the file into a temporary sibling and renames
it over the original (under an exclusive lock), so a killed writer, a concurrent writer or a
full disk never leaves a torn row. Files with an older header are migrated on the next write.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import fcntl
import functools
import io
import math
import os
import platform
import socket
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_VERSION = 1
REPO = Path(__file__).resolve().parents[1]

PROVENANCE = ["schema_version", "run_id", "timestamp_utc", "source", "git_commit", "git_dirty",
              "hostname", "cpu_model", "cpu_count", "gpu_names", "python_version", "tf_version",
              "keras_version", "horovod_version"]
CONFIG = ["model", "strategy", "data", "batch_size", "num_classes", "image_size", "steps",
          "warmup_steps", "epochs", "target_accuracy", "width", "precision", "xla", "optimizer", "lr",
          "momentum", "weight_decay", "augment", "normalize", "seed", "scale_lr", "lr_warmup_epochs",
          "threads", "cpu_replicas", "collective_timeout"]
MODEL = ["params", "gflops_per_image"]
TOPOLOGY = ["workers", "replicas", "per_replica_batch", "global_batch"]
TIMING = ["compile_s", "timed_steps", "step_time_mean_s", "step_time_median_s", "step_time_p90_s",
          "step_time_min_s", "step_time_max_s", "step_time_std_s", "step_time_ci95_low_s",
          "step_time_ci95_high_s", "step_time_median_ci95_low_s", "step_time_median_ci95_high_s",
          "step_time_jitter_s", "rank_step_time_means_s", "images_per_sec", "images_per_sec_median",
          "images_per_sec_ci95_low", "images_per_sec_ci95_high", "images_per_sec_median_ci95_low",
          "images_per_sec_median_ci95_high", "images_per_sec_per_replica", "images_per_sec_jitter", "tflops"]
ACCURACY = ["final_loss", "train_accuracy", "top1", "top5", "epochs_run", "target_reached",
            "time_to_target_s", "top1_by_epoch", "epoch_end_s", "wall_s"]
OUTCOME = ["status", "error"]
COLUMNS = PROVENANCE + CONFIG + MODEL + TOPOLOGY + TIMING + ACCURACY + OUTCOME
STATUSES = ("ok", "nan", "failed", "oom", "timeout")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    with contextlib.suppress(OSError):  # no /proc (not Linux): fall back to platform
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return ""


@functools.cache
def _static_provenance() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else ""
    tf_version = _version("tensorflow-cpu") or _version("tensorflow")
    return {"git_commit": commit or "unknown", "git_dirty": dirty, "hostname": socket.gethostname(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "python_version": platform.python_version(),
            "tf_version": tf_version, "keras_version": _version("keras"),
            "horovod_version": _version("horovod")}


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def provenance(gpu_names: Iterable[str] = (), source: str = "cli", run_id: str | None = None) -> dict[str, Any]:
    """Where, when and with what a result was produced."""
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id or new_run_id(),
            "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": source, **_static_provenance(), "gpu_names": ";".join(gpu_names)}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def format_row(row: Mapping[str, Any], columns: list[str] = COLUMNS) -> str:
    """One CSV line (with newline) for `row`; unknown keys are an error, missing ones blank."""
    extra = set(row) - set(columns)
    if extra:
        raise KeyError(f"row has columns outside the schema: {sorted(extra)}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def _header(columns: list[str]) -> str:
    return ",".join(columns) + "\n"


def check_writable(path: str | os.PathLike) -> None:
    """Raise OSError now (before a long run) if `path` cannot be appended to later."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to directory {p.parent}")
    if p.exists() and not os.access(p, os.R_OK):
        raise PermissionError(f"cannot read {p}")


def append_row(path: str | os.PathLike, row: Mapping[str, Any]) -> None:
    """Append one row atomically: the file afterwards holds every old row plus this one, or,
    if anything fails (disk full, kill, permissions), is exactly as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = format_row(row)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
        try:
            old = path.read_text(encoding="utf-8") if path.exists() else ""
            content = _merge(old, line)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _merge(old: str, line: str) -> str:
    if not old.strip():
        return _header(COLUMNS) + line
    first = old.split("\n", 1)[0]
    if first == ",".join(COLUMNS):
        return (old if old.endswith("\n") else old + "\n") + line
    # An older (or newer) schema: rewrite every row under the current columns, keeping any
    # columns this version does not know at the end so that nothing is lost.
    rows = list(csv.DictReader(io.StringIO(old)))
    known = set(COLUMNS)
    extras = [c for c in (rows[0].keys() if rows else first.split(",")) if c not in known]
    columns = COLUMNS + extras
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", restval="")
    w.writeheader()
    w.writerows(rows)
    new = next(csv.reader(io.StringIO(line)))
    w.writerow(dict(zip(COLUMNS, new)))
    return out.getvalue()


def read_rows(path: str | os.PathLike):
    """A results CSV as a pandas DataFrame. Only empty cells are missing values: pandas would
    otherwise read the status 'nan' as one."""
    import pandas as pd

    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in ("status", "error"):
        if col in df:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    return df
