r"""Result rows: the CSV schema, provenance, and an atomic, lock-protected append.

A row is whole or absent: each append rewrites the file into a temporary sibling and renames
it over the original (under an exclusive lock), so a killed writer, a concurrent writer or a
full disk never leaves a torn row. Files with an older header are migrated on the next write.

Cells (one rule for every column, undone by `read_rows` and `load_results`):
- A cell is written as it is unless it holds a control character (U+0000-U+001F, U+007F-U+009F,
  the line and paragraph separators U+2028/U+2029, or a lone surrogate from an undecodable file
  name), or its first non-blank character is one a spreadsheet evaluates (``= + - @``) or the
  marker ``'`` itself. A plain decimal number (``-1.5``, ``+2``, ``1e-05``, ``-inf``) is a
  number, never a formula, and is written as it is.
- Any other such cell is protected: a leading ``'`` (OWASP's neutraliser for CSV injection), then
  the text with ``\\`` for a backslash, ``\n``, ``\r``, ``\t``, and ``\xHH`` or ``\uHHHH`` for every
  other character above. So one record is always one physical line, and a spreadsheet shows
  text. Readers strip the ``'`` and undo the escapes of every cell that begins with ``'``;
  a plain CSV reader gets every unprotected cell exactly as recorded.

The writer never deletes a row a reader accepts (only a last line cut inside a quoted cell or
before its status is a torn write), never rewrites a file whose header names a column twice or
whose rows are of a newer schema, and never grows a file past MAX_CSV_BYTES, the size readers
accept: it refuses (OutputRefused, exit 2 at the command line) and leaves the file as it was.
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
import re
import socket
import stat
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .config import CONFIG_COLUMNS, probe_write, schema

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


# ---- cells: one record on one line, no cell a formula (the rule is in the module docstring) ------
_PROTECTED_CHARS = "\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
_NEEDS_ESCAPE = re.compile(f"[{_PROTECTED_CHARS}]")
_ESCAPED = re.compile(f"[\\\\{_PROTECTED_CHARS}]")
_FORMULA_LEADS = "=+-@'"  # OWASP's formula prefixes (TAB and CR are control characters), and the marker
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|nan)", re.ASCII | re.IGNORECASE)
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_ESCAPE_SEQUENCE = re.compile(r"\\(?:[\\nrt]|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _escape(m: re.Match) -> str:
    c = m.group()
    return _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def _unescape(m: re.Match) -> str:
    seq = m.group()
    return _UNESCAPES.get(seq) or chr(int(seq[2:], 16))


def protect_cell(text: str) -> str:
    """A cell's text as written: protected (a leading ' and escapes) where a spreadsheet would
    evaluate it or a control character would break the line; as it is otherwise."""
    lead = text.lstrip(" ")[:1]
    if _NEEDS_ESCAPE.search(text) or (lead and lead in _FORMULA_LEADS and not _NUMBER.fullmatch(text)):
        return "'" + _ESCAPED.sub(_escape, text)
    return text


def unprotect_cell(cell: Any) -> Any:
    """The text a cell recorded (anything that is not a string, such as a missing value, as it is)."""
    if isinstance(cell, str) and cell.startswith("'"):
        return _ESCAPE_SEQUENCE.sub(_unescape, cell[1:])
    return cell


def _csv_line(cells: Iterable[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


def format_row(row: Mapping[str, Any], columns: list[str] = COLUMNS) -> str:
    """One CSV line (with newline) for `row`; unknown keys are an error, missing ones blank."""
    extra = set(row) - set(columns)
    if extra:
        raise KeyError(f"row has columns outside the schema: {sorted(extra)}")
    return _csv_line(protect_cell(_cell(row.get(c))) for c in columns)


def _header(columns: list[str]) -> str:
    return _csv_line(columns)


def _lines(text: str) -> Iterable[str]:
    """`text` line by line, each with its newline: csv reads a large file without a second copy."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


# A cell may be as large as the file; the csv module's default limit (128 KiB a cell) would make
# the writer fail on a file that readers accept.
csv.field_size_limit(2**31 - 1)

MAX_CSV_BYTES = 256 * 2**20  # far beyond any results file; reading more would only fill memory
ROW_ROOM = 64 * 2**10  # far more than a run's row needs (a few KiB: errors are cut to 500 characters)


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


def read_existing(path: Path) -> str:
    """An existing results file's text ('' if there is none). OutputRefused unless it is a
    regular, UTF-8 cnnbench CSV (or empty) of a sane size whose header names each column once:
    nothing else is ours to read or rewrite."""
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
    if not text.strip():
        return text
    columns = next(csv.reader([text.split("\n", 1)[0]]), [])
    if not set(HEADER_MARKS) <= set(columns):
        raise OutputRefused(f"{path} exists and is not a cnnbench results CSV (its header lacks "
                            f"{', '.join(HEADER_MARKS)})")
    twice = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if twice is not None:  # readers would take one of them, a rewrite would lose the other
        raise OutputRefused(f"{path} names the column {twice!r} twice in its header: not a cnnbench results CSV")
    return text


def _refuse_rewrite(text: str, path: Path) -> None:
    """OutputRefused unless this version can add a row to `text` and keep every row as a reader
    reads it: rows of a newer schema would be rewritten under this version's columns."""
    if not text.strip():
        return
    reader = csv.reader(_lines(text))
    try:
        i = next(reader).index("schema_version")
        versions = [fields[i] for fields in reader if len(fields) > i]
    except csv.Error as e:  # a raw line break in an unquoted cell (a writer that was not ours)
        raise OutputRefused(f"{path} is not a readable CSV (line {reader.line_num}: {e}): "
                            "not a cnnbench results CSV this version can rewrite") from None
    newest = max((v for v in map(_number, versions) if math.isfinite(v)), default=SCHEMA_VERSION)
    if newest > SCHEMA_VERSION:
        raise OutputRefused(f"{path} holds rows of a newer schema ({newest:g} > {SCHEMA_VERSION}) that this "
                            "cnnbench would rewrite under its own; upgrade, or pass --output NEW.csv to start "
                            "a new file")


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def _too_large(path: Path, size: int, more: str) -> str:
    return (f"{path} holds {size} bytes; {more} would take it past {MAX_CSV_BYTES // 2**20} MiB, the most a "
            "cnnbench results file may hold: pass --output NEW.csv to start a new file")


def check_output(path: str | os.PathLike) -> None:
    """Raise BenchInputError now, before anything trains, unless `path` is a new file in a
    writable folder or an existing cnnbench CSV that can be read and rewritten, with room for a
    row (ROW_ROOM) below MAX_CSV_BYTES."""
    from .errors import BenchInputError

    p = output_target(path)
    try:
        text = read_existing(p)
        size = p.stat().st_size if text else 0
        if size + ROW_ROOM > MAX_CSV_BYTES:
            raise OutputRefused(_too_large(p, size, f"a row (up to {ROW_ROOM // 2**10} KiB)"))
        _refuse_rewrite(text, p)
        probe_write(p.parent)  # the folder is made by the first row: a run refused later leaves none behind
    except OutputRefused as e:
        raise BenchInputError(f"refusing output={path}: {e}") from None
    except OSError as e:
        raise BenchInputError(f"cannot write results to output={path}: {e.strerror or e}") from None


def _repair_torn_tail(text: str, path: Path) -> str:
    """Drop a torn last line (a writer that was not ours died mid-row). A last row that readers
    accept is kept, even with its trailing empty cells trimmed: torn is a line cut inside a
    quoted cell, before its status cell, or inside it (a status no run has)."""
    if not text or text.endswith("\n"):
        return text
    reader = csv.reader(_lines(text))
    header, last, start_line = next(reader, []), None, 0
    consumed = reader.line_num
    for fields in reader:
        last, start_line, consumed = fields, consumed, reader.line_num
    start = 0
    for _ in range(start_line):
        start = text.index("\n", start) + 1
    if last is not None:
        status = header.index("status")
        cut = (text[start:].count('"') % 2 or len(last) > len(header) or len(last) <= status
               or (len(last) == status + 1 and last[status] not in (*STATUSES, *OLD_STATUS_NAMES)))
        if not cut:
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
    a cnnbench CSV this version can rewrite, or that the row would take past MAX_CSV_BYTES, is
    never replaced (OutputRefused)."""
    path = output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = format_row(row)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale_temporaries(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
        try:
            old = read_existing(path)
            _refuse_rewrite(old, path)
            data = _merge(_repair_torn_tail(old, path), line, path).encode("utf-8")
            if len(data) > MAX_CSV_BYTES:
                size = path.stat().st_size if old else 0
                raise OutputRefused(_too_large(path, size, f"this append ({len(data) - size} more bytes)"))
            with open(tmp, "wb") as f:
                f.write(data)
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


def _needs_migration(old: str) -> bool:
    """Whether `old` has another header or a row of an older schema (read row by row: a file
    near MAX_CSV_BYTES as dicts would take several times its size in memory)."""
    reader = csv.reader(_lines(old))
    if next(reader) != COLUMNS:
        return True
    at = [COLUMNS.index(c) for c in OLD_DEFAULTS]
    status = COLUMNS.index("status")
    return any(len(fields) <= max(*at, status) or fields[status] in OLD_STATUS_NAMES or not all(fields[i] for i in at)
               for fields in reader if fields)


def _merge(old: str, line: str, path: Path) -> str:
    if not old.strip():
        return _header(COLUMNS) + line
    if not _needs_migration(old):
        return (old if old.endswith("\n") else old + "\n") + line
    reader = csv.DictReader(_lines(old))
    rows = list(reader)
    # An older schema: rewrite every row under the current columns, keeping any columns this
    # version does not know at the end so that nothing is lost.
    if any(None in r for r in rows):
        i = next(i for i, r in enumerate(rows) if None in r)
        raise OutputRefused(f"{path}: row {i + 1} has more cells than the header names: not a cnnbench results "
                            "CSV this version can rewrite")
    columns = COLUMNS + [c for c in reader.fieldnames or [] if c not in set(COLUMNS)]
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", restval="")
    out.write(_header(columns))
    # cells an older writer left raw (a line break in a quoted cell, a formula) are protected now
    w.writerows(_migrate({k: protect_cell(unprotect_cell(v)) if isinstance(v, str) else v for k, v in r.items()})
                for r in rows)
    w.writerow(dict(zip(COLUMNS, next(csv.reader([line])))))
    return out.getvalue()


def read_rows(path: str | os.PathLike):
    """A results CSV as a pandas DataFrame, cells as pandas parses them, protected text cells
    as they were recorded. Only empty cells are missing values; statuses of older schemas get
    their current names."""
    import pandas as pd

    # text columns stay text: a hex run id or commit like 1234e5678901 would otherwise read as a float
    text = {c: str for c, kind in COLUMN_TYPES.items() if kind == "str"}
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], compression=None, dtype=text)
    for col in df.columns:
        if df[col].dtype == object or isinstance(df[col].dtype, pd.StringDtype):
            df[col] = df[col].map(unprotect_cell, na_action="ignore")
    df = df.copy()  # one block per dtype again after the columns replaced one by one
    for col in ("status", "error"):
        if col in df:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    if "status" in df:
        df["status"] = df["status"].replace(OLD_STATUS_NAMES)
    if "model" in df:
        for col, value in OLD_DEFAULTS.items():
            if col not in df:
                df[col] = value
            elif df[col].isna().any():  # an all-empty column reads as float, which holds no text or bool
                df[col] = (df[col].astype(object) if df[col].dtype.kind == "f" else df[col]).fillna(value)
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
    for c in raw.columns:
        raw[c] = raw[c].map(unprotect_cell, na_action="ignore")
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
    if session is not None and session.init_weights_sha256:  # taken when the file was read, not now
        row["init_weights_sha256"] = session.init_weights_sha256
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
