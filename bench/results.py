"""Result rows: the CSV schema, provenance, and an atomic, lock-protected append.

A row is whole or absent: each append rewrites the file into a temporary sibling and renames
it over the original (under an exclusive lock), so a killed writer, a concurrent writer or a
full disk never leaves a torn row. Files with an older header are migrated on the next write.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import fcntl
import functools
import io
import logging
import math
import os
import platform
import socket
import stat
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .config import CONFIG_COLUMNS, schema

if TYPE_CHECKING:
    from .config import RunConfig

log = logging.getLogger(__name__)

# 2: the status of a run whose loss went non-finite is "diverged" (was "nan")
# 3: the backend (older rows are TensorFlow's), its versions, the device kind, the initial weights
# 4: the mode (older rows trained), latency percentiles, input wait, peak and estimated memory, max-batch probes
# 5: diagnostic runs without gradient sync, Horovod's hierarchical all-reduce, autotune and
#    timeline (per-step negotiation, all-reduce and queue times), tf.distribute's pack size;
#    the model's form (CIFAR or the paper's)
# 6: the process's own peak memory since start-up, beside the timed steps' peak
SCHEMA_VERSION = 6
REPO = Path(__file__).resolve().parents[1]

# Every column and its type (int, float, bool, str, time), in CSV order. The configuration
# columns and their types come from RunConfig's schema (bench.config).
PROVENANCE = {"schema_version": "int", "run_id": "str", "timestamp_utc": "time", "source": "str",
              "git_commit": "str", "git_dirty": "bool", "hostname": "str", "cpu_model": "str",
              "cpu_count": "int", "gpu_names": "str", "python_version": "str", "tf_version": "str",
              "keras_version": "str", "horovod_version": "str", "jax_version": "str", "jaxlib_version": "str",
              "device_kind": "str", "init_weights_sha256": "str"}
CONFIG = {name: schema()[name].kind for name in CONFIG_COLUMNS}
MODEL = {"params": "int", "gflops_per_image": "float"}
TOPOLOGY = {"workers": "int", "replicas": "int", "per_replica_batch": "int", "global_batch": "int"}
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
LATENCY = {c: "float" for c in ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
                                 "latency_per_image_ms")}
INPUT = {"data_wait_ms": "float"}
PROFILE = {"trace_dir": "str"}
# from Horovod's timeline (mean ms per timed step, the chief's view) and autotuner
COMM = {"hvd_negotiate_ms": "float", "hvd_allreduce_ms": "float", "hvd_queue_ms": "float", "hvd_autotune_best": "str"}
MEMORY = {"peak_mem_bytes": "int", "process_peak_mem_bytes": "int", "mem_source": "str", "mem_estimate_bytes": "int"}
ACCURACY = {"final_loss": "float", "train_accuracy": "float", "top1": "float", "top5": "float",
            "epochs_run": "int", "target_reached": "bool", "time_to_target_s": "float", "top1_by_epoch": "str",
            "epoch_end_s": "str", "wall_s": "float"}
OUTCOME = {"status": "str", "error": "str"}
COLUMN_TYPES: dict[str, str] = {**PROVENANCE, **CONFIG, **MODEL, **TOPOLOGY, **TIMING, **LATENCY, **INPUT, **PROFILE, **COMM, **MEMORY,
                                 **ACCURACY, **OUTCOME}
COLUMNS = list(COLUMN_TYPES)
STATUSES = ("ok", "diverged", "failed", "oom", "oom_predicted", "timeout")
HEADER_MARKS = ["schema_version", "model", "status"]  # every cnnbench header, of any schema, has these
REQUIRED = [*HEADER_MARKS, "strategy", "batch_size"]  # what the report needs
OLD_STATUS_NAMES = {"nan": "diverged"}  # schema 1 called a non-finite loss "nan", which CSV readers take for missing
# what rows of older schemas meant by the columns they lack: TensorFlow before 3; training, and the
# strategies' own all-reduce without compression, before 4; gradients synced, none of Horovod's
# hierarchical all-reduce, autotune or timeline, and the automatic form, before 5
OLD_DEFAULTS = {"backend": "tensorflow", "mode": "train", "all_reduce": "auto", "hvd_compression": "none",
                "gradient_sync": True, "hvd_hierarchical": False, "hvd_autotune": False, "hvd_timeline": False,
                "form": "auto"}


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


def package_version(pkg: str) -> str:
    """An installed distribution's version, read from its metadata ('' if absent): no import."""
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return ""


# The stack each backend runs on; a row records only the versions its run used.
BACKEND_PACKAGES = {"tensorflow": {"tf_version": ("tensorflow-cpu", "tensorflow"), "horovod_version": ("horovod",)},
                    "jax": {"jax_version": ("jax",), "jaxlib_version": ("jaxlib",)}}


def backend_versions(backend: str) -> dict[str, str]:
    out = {col: "" for cols in BACKEND_PACKAGES.values() for col in cols}
    for col, pkgs in BACKEND_PACKAGES.get(backend, {}).items():
        out[col] = next((v for v in map(package_version, pkgs) if v), "")
    return out


@functools.cache
def _static_provenance() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else ""
    return {"git_commit": commit or "unknown", "git_dirty": dirty, "hostname": socket.gethostname(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "python_version": platform.python_version(),
            "keras_version": package_version("keras")}


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def new_run_id() -> str:
    """12 hex digits with a letter other than e, so no CSV reader takes the id for a number."""
    while True:
        run_id = uuid.uuid4().hex[:12]
        if any(c in "abcdf" for c in run_id):
            return run_id


def provenance(gpu_names: Iterable[str] = (), source: str = "cli", run_id: str | None = None,
               backend: str = "tensorflow") -> dict[str, Any]:
    """Where, when and with what a result was produced."""
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id or new_run_id(),
            "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": source, **_static_provenance(), **backend_versions(backend), "gpu_names": ";".join(gpu_names)}


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


MAX_CSV_BYTES = 256 * 2**20  # far beyond any results file; reading more would only fill memory


class OutputRefused(OSError):
    """The output path is not a file cnnbench may rewrite (a device, a foreign file, ...)."""


def _not_regular(st: os.stat_result) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(st.st_mode):
            return what
    return None if stat.S_ISREG(st.st_mode) else "not a regular file"


def output_target(path: str | os.PathLike) -> Path:
    """Where rows for `path` go: a symlink is followed, so the link survives the atomic rename."""
    p = Path(path)
    return p.resolve() if p.is_symlink() else p


def _is_results_header(line: str) -> bool:
    cols = next(csv.reader([line]), [])
    return set(HEADER_MARKS) <= set(cols)


def read_existing(path: Path) -> str:
    """An existing results file's text ('' if there is none). OutputRefused unless it is a
    regular, UTF-8 cnnbench CSV (or empty) of a sane size: nothing else is ours to rewrite."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return ""
    what = _not_regular(st)
    if what:
        raise OutputRefused(f"{path} is {what}, not a results CSV")
    with open(path, "rb") as f:
        raw = f.read(MAX_CSV_BYTES + 1)
    if len(raw) > MAX_CSV_BYTES:
        raise OutputRefused(f"{path} is larger than {MAX_CSV_BYTES // 2**20} MiB: not a cnnbench results CSV")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OutputRefused(f"{path} is not UTF-8 text (byte {e.start}): not a cnnbench results CSV") from None
    if text.strip() and not _is_results_header(text.split("\n", 1)[0]):
        raise OutputRefused(f"{path} exists and is not a cnnbench results CSV (its header lacks "
                            f"{', '.join(HEADER_MARKS)})")
    return text


def check_output(path: str | os.PathLike) -> None:
    """Raise BenchInputError now, before anything trains, unless `path` is a new file in a
    writable folder or an existing cnnbench CSV that can be read and rewritten."""
    from .errors import BenchInputError

    p = output_target(path)
    try:
        read_existing(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write to directory {p.parent}")
    except OutputRefused as e:
        raise BenchInputError(f"refusing output={path}: {e}") from None
    except OSError as e:
        raise BenchInputError(f"cannot write results to output={path}: {e.strerror or e}") from None


def _repair_torn_tail(text: str, path: Path) -> str:
    """Drop a partial last line (a writer that was not ours died mid-row); a complete last row
    that only lacks its newline is kept."""
    if not text or text.endswith("\n"):
        return text
    start = text.rfind("\n") + 1
    reader = csv.reader(io.StringIO(text))
    header, records, prev = next(reader, []), [], 1
    for fields in reader:
        records.append((prev, fields))
        prev = reader.line_num
    lines = text.split("\n")
    if records:
        first_line, fields = records[-1]
        start = len("\n".join(lines[:first_line])) + 1
        raw = text[start:]
        if len(fields) == len(header) and raw.count('"') % 2 == 0:
            return text + "\n"
    log.warning("%s: dropped a partial last line (%d characters) left by an interrupted writer", path,
                len(text) - start)
    return text[:start]


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary siblings whose writer process is gone (killed mid-append)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def append_row(path: str | os.PathLike, row: Mapping[str, Any]) -> None:
    """Append one row atomically: the file afterwards holds every old row plus this one, or,
    if anything fails (disk full, kill, permissions), is exactly as it was. A file that is not
    a cnnbench CSV is never replaced (OutputRefused)."""
    path = output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = format_row(row)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale_temporaries(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
        try:
            content = _merge(_repair_torn_tail(read_existing(path), path), line)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _migrate(row: dict[str, str]) -> dict[str, str]:
    """An older row in the current schema's terms."""
    if row.get("status") in OLD_STATUS_NAMES:
        row["status"] = OLD_STATUS_NAMES[row["status"]]
    for col, value in OLD_DEFAULTS.items():
        if not row.get(col):
            row[col] = value
    return row


def _needs_migration(rows: list[dict[str, str]]) -> bool:
    return any(r.get("status") in OLD_STATUS_NAMES or any(not r.get(c) for c in OLD_DEFAULTS) for r in rows)


def _merge(old: str, line: str) -> str:
    if not old.strip():
        return _header(COLUMNS) + line
    first = old.split("\n", 1)[0]
    rows = list(csv.DictReader(io.StringIO(old)))
    if first == ",".join(COLUMNS) and not _needs_migration(rows):
        return (old if old.endswith("\n") else old + "\n") + line
    # An older (or newer) schema: rewrite every row under the current columns, keeping any
    # columns this version does not know at the end so that nothing is lost.
    known = set(COLUMNS)
    extras = [c for c in (rows[0].keys() if rows else first.split(",")) if c not in known]
    columns = COLUMNS + extras
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", restval="")
    w.writeheader()
    w.writerows(_migrate(r) for r in rows)
    new = next(csv.reader(io.StringIO(line)))
    w.writerow(dict(zip(COLUMNS, new)))
    return out.getvalue()


def read_rows(path: str | os.PathLike):
    """A results CSV as a pandas DataFrame, cells as pandas parses them. Only empty cells are
    missing values; statuses of older schemas get their current names."""
    import pandas as pd

    # text columns stay text: a hex run id or commit like 1234e5678901 would otherwise read as a float
    text = {c: str for c, kind in COLUMN_TYPES.items() if kind == "str"}
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], compression=None, dtype=text)
    for col in ("status", "error"):
        if col in df:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    if "status" in df:
        df["status"] = df["status"].replace(OLD_STATUS_NAMES)
    if "model" in df:
        for col, value in OLD_DEFAULTS.items():
            df[col] = df[col].fillna(value) if col in df else value
    return df


# ---- typed loading (reports, notebooks) ---------------------------------------------------------
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "time": "a UTC timestamp"}


def _typed(cells, kind: str):
    """A column of raw text cells in its schema type, and the mask of cells that do not parse."""
    import pandas as pd

    present = cells.notna() & (cells.astype("string").str.strip() != "")
    if kind in ("int", "float"):
        values = pd.to_numeric(cells, errors="coerce")
        bad = present & values.isna() & ~cells.astype("string").str.strip().str.lower().isin(["nan"])
        if kind == "int":
            bad |= present & values.notna() & (values != values.round())
            values = values.where(~bad).astype("Float64").round().astype("Int64")
        return values.astype(float) if kind == "float" else values, bad
    if kind == "bool":
        values = cells.map(lambda v: _BOOLS.get(str(v).strip().lower(), pd.NA) if pd.notna(v) else pd.NA)
        return values.astype("boolean"), present & values.isna()
    if kind == "time":
        values = pd.to_datetime(cells, utc=True, errors="coerce", format="ISO8601")
        return values, present & values.isna()
    return cells.astype("string"), present & False


def _results_text(path: Path) -> str:
    """A results file's text, or BenchInputError naming why it is not a cnnbench CSV."""
    from .errors import BenchInputError

    if not path.exists():
        raise BenchInputError(f"no such results file: {path}")
    try:
        text = read_existing(path)
    except OutputRefused as e:
        raise BenchInputError(str(e).replace("exists and is not", "is not")) from None
    except OSError as e:
        raise BenchInputError(f"cannot read results file {path}: {e.strerror or e}") from None
    if not text.strip():
        raise BenchInputError(f"{path} is empty: not a cnnbench results CSV")
    return text


def _load_one(path: Path):
    """One results file, typed, every cell checked: BenchInputError names a corrupted cell by
    file, row (1 = the first data row) and column."""
    import pandas as pd

    from .errors import BenchInputError

    try:
        raw = pd.read_csv(io.StringIO(_results_text(path)), dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as e:
        raise BenchInputError(f"{path} is not a readable CSV: {e}") from None
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise BenchInputError(f"{path} is not a cnnbench results file (no {', '.join(missing)} column)")
    df = raw.copy()
    for c, kind in COLUMN_TYPES.items():
        if c not in df.columns:
            df[c] = pd.NA  # older schema: newer columns are empty
            continue
        df[c], bad = _typed(raw[c], kind)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise BenchInputError(f"{path}: row {i + 1}, column {c}: {raw[c].iloc[i]!r} is not {_KIND_WORDS[kind]}")
    if df["schema_version"].isna().any():
        i = int(df["schema_version"].isna().to_numpy().nonzero()[0][0])
        raise BenchInputError(f"{path}: row {i + 1}, column schema_version: the cell is empty")
    if (df["schema_version"] > SCHEMA_VERSION).any():
        raise BenchInputError(f"{path} was written by a newer cnnbench (schema "
                              f"{df['schema_version'].max()} > {SCHEMA_VERSION}); upgrade to read it")
    df["status"] = df["status"].fillna("").replace(OLD_STATUS_NAMES)
    for col, value in OLD_DEFAULTS.items():
        df[col] = df[col].fillna(value)
    df["error"] = df["error"].fillna("")
    df["source_file"] = str(path)
    return df


def load_results(paths: Iterable[str | os.PathLike]):
    """One or more cnnbench CSVs as one DataFrame, each column typed by the schema (integers,
    floats, booleans, strings, UTC timestamps), with `source_file` and `config_key` added.

    Files from an older schema load with the newer columns empty. A file that is not a
    cnnbench CSV, is from a newer schema, or holds a cell that does not parse as its column's
    type raises BenchInputError naming the file (and the row and column)."""
    import pandas as pd

    from .config import config_key
    from .errors import BenchInputError

    frames = [_load_one(Path(p)) for p in paths]
    if not frames:
        raise BenchInputError("no results files given")
    df = pd.concat(frames, ignore_index=True, sort=False)
    df["config_key"] = [config_key(r) for r in df.to_dict("records")]
    return df


# ---- the one row builder ------------------------------------------------------------------------
# FLOPs per image of a step, in forward passes: backward costs about two more (activations, weights)
PASSES = {"train": 3.0, "inference": 1.0}

@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a run ended: a status from STATUSES and, unless ok, what went wrong."""
    status: str
    error: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


@dataclasses.dataclass(frozen=True)
class Topology:
    workers: int
    replicas: int
    per_replica_batch: int | None
    global_batch: int | None


@dataclasses.dataclass
class AccuracyResult:
    """What accuracy mode measured, epoch by epoch."""
    top1: float = math.nan
    top5: float = math.nan
    epochs_run: int = 0
    top1_by_epoch: list[float] = dataclasses.field(default_factory=list)
    epoch_end_s: list[float] = dataclasses.field(default_factory=list)
    target_reached: bool | None = None
    time_to_target_s: float | None = None

    def columns(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "epochs_run": self.epochs_run,
                "top1_by_epoch": ";".join(f"{x:.6g}" for x in self.top1_by_epoch),
                "epoch_end_s": ";".join(f"{x:.6g}" for x in self.epoch_end_s),
                "target_reached": self.target_reached, "time_to_target_s": self.time_to_target_s}


def build_row(cfg: "RunConfig", outcome: Outcome, *, session: Any = None, topology: Topology | None = None,
              timing: Any = None, accuracy: AccuracyResult | None = None, gpu_names: Iterable[str] = (),
              wall_s: float | None = None) -> dict[str, Any]:
    """The one way a result row is made: the CLI, the sweep's fallback row and the pytest
    benchmark all call this.

    `session` (bench.runner.Session) gives the topology, the model's size and the GPUs; without
    one (a run that never started), pass `topology` where it is known. `timing`
    (bench.timing.Timing) is gathered over every rank through the session's distribution, so
    with a timing every rank must call this."""
    from .stats import latency_columns, slowest_rank_per_step, step_stats, throughput

    if session is not None:
        topology, gpu_names = session.topology, session.gpu_names
    row: dict[str, Any] = provenance(gpu_names, source=cfg.source, run_id=cfg.run_id, backend=cfg.backend)
    if session is not None:
        row.update(session.backend.provenance(session.gpu_names))
    if cfg.init_weights:
        row["init_weights_sha256"] = file_sha256(cfg.init_weights)
    row.update({k: getattr(cfg, k) for k in CONFIG})
    if topology is not None:
        row.update(dataclasses.asdict(topology))
    if session is not None and session.desc is not None:
        row.update(params=session.desc.params, gflops_per_image=session.desc.gflops)
    if session is not None and session.estimate is not None:
        row["mem_estimate_bytes"] = session.estimate.total_bytes
    if session is not None and session.trace_dir is not None:
        row["trace_dir"] = session.trace_dir
    if timing is not None and session is not None:
        dist = session.dist
        per_rank = dist.gather(timing.step_times)
        slowest = slowest_rank_per_step(per_rank)
        stats = step_stats(slowest)
        row.update(compile_s=float(dist.gather([timing.compile_s]).max()), **stats.as_dict(),
                   rank_step_time_means_s=";".join(f"{m:.6g}" for m in per_rank.mean(axis=1)),
                   **throughput(stats, global_batch=session.global_batch, replicas=dist.num_replicas,
                                flops_per_image=session.desc.flops, passes=PASSES[cfg.mode]),
                   **latency_columns(slowest, session.global_batch),
                   final_loss=timing.losses[-1] if timing.losses and cfg.mode == "train" else None,
                   train_accuracy=(timing.correct / timing.images
                                   if timing.images and accuracy is not None else None))
        if timing.data_waits:  # the rank that waited longest, on average per step
            row["data_wait_ms"] = 1000.0 * float(dist.gather([sum(timing.data_waits) / len(timing.data_waits)]).max())
        row.update(timing.comm)
        if timing.peak_mem_bytes is not None:  # the largest over ranks
            row.update(peak_mem_bytes=int(dist.gather([timing.peak_mem_bytes]).max()), mem_source=timing.mem_source)
        if timing.process_peak_mem_bytes is not None:
            row["process_peak_mem_bytes"] = int(dist.gather([timing.process_peak_mem_bytes]).max())
    if accuracy is not None:
        row.update(accuracy.columns())
    row.update(status=outcome.status, error=outcome.error, wall_s=wall_s)
    return row
