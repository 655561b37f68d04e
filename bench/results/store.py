r"""The results file, kept safe.

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

import csv
import fcntl
import io
import logging
import math
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from bench.config.parse import probe_write
from bench.errors import BenchInputError
from bench.results.columns import COLUMNS, OLD_STATUS_NAMES, RUNS, STATUSES, Table

log = logging.getLogger(__name__)


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


def not_regular(st: os.stat_result) -> str | None:
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


def read_text(path: Path, kind: str, max_bytes: int) -> str:
    """An existing file's text ('' if there is none). OutputRefused, naming `kind` (what the file
    should be: "a cnnbench results CSV"), unless it is a regular UTF-8 file of at most `max_bytes`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return ""
    what = not_regular(st)
    if what:
        raise OutputRefused(f"{path} is {what}, not {kind}")
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise OutputRefused(f"{path} is larger than {max_bytes // 2**20} MiB: not {kind}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OutputRefused(f"{path} is not UTF-8 text (byte {e.start}): not {kind}") from None


def read_existing(path: Path, table: Table = RUNS) -> str:
    """An existing results file's text ('' if there is none). OutputRefused unless it is a
    regular, UTF-8 cnnbench CSV of `table`'s kind (or empty) of a sane size whose header names
    each column once: nothing else is ours to read or rewrite."""
    text = read_text(path, "a cnnbench results CSV", MAX_CSV_BYTES)
    if not text.strip():
        return text
    columns = next(csv.reader([text.split("\n", 1)[0]]), [])
    if not set(table.header_marks) <= set(columns):
        raise OutputRefused(f"{path} exists and is not a cnnbench {table.name} CSV (its header lacks "
                            f"{', '.join(table.header_marks)})")
    twice = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if twice is not None:  # readers would take one of them, a rewrite would lose the other
        raise OutputRefused(f"{path} names the column {twice!r} twice in its header: not a cnnbench results CSV")
    return text


def _refuse_rewrite(text: str, path: Path, table: Table = RUNS) -> None:
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
    newest = max((v for v in map(_number, versions) if math.isfinite(v)), default=table.schema_version)
    if newest > table.schema_version:
        raise OutputRefused(f"{path} holds rows of a newer schema ({newest:g} > {table.schema_version}) that this "
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


def check_output(path: str | os.PathLike, table: Table = RUNS) -> None:
    """Raise BenchInputError now, before anything trains, unless `path` is a new file in a
    writable folder or an existing cnnbench CSV that can be read and rewritten, with room for a
    row (ROW_ROOM) below MAX_CSV_BYTES."""

    p = output_target(path)
    try:
        text = read_existing(p, table)
        size = p.stat().st_size if text else 0
        if size + ROW_ROOM > MAX_CSV_BYTES:
            raise OutputRefused(_too_large(p, size, f"a row (up to {ROW_ROOM // 2**10} KiB)"))
        _refuse_rewrite(text, p, table)
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


def append_row(path: str | os.PathLike, row: Mapping[str, Any], table: Table = RUNS) -> None:
    """Append one row atomically: the file afterwards holds every old row plus this one, or,
    if anything fails (disk full, kill, permissions), is exactly as it was. A file that is not
    a cnnbench CSV this version can rewrite, or that the row would take past MAX_CSV_BYTES, is
    never replaced (OutputRefused)."""
    append_rows(path, [row], table)


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], table: Table = RUNS) -> None:
    """append_row for several rows at once: all of them or none."""
    path = output_target(path)
    line = "".join(format_row(row, table.columns) for row in rows)

    def new_text() -> bytes:
        old = read_existing(path, table)
        _refuse_rewrite(old, path, table)
        data = _merge(_repair_torn_tail(old, path), line, path, table).encode("utf-8")
        if len(data) > MAX_CSV_BYTES:
            size = path.stat().st_size if old else 0
            raise OutputRefused(_too_large(path, size, f"this append ({len(data) - size} more bytes)"))
        return data

    replace_locked(path, new_text)


def replace_locked(path: Path, new_text: Callable[[], bytes]) -> None:
    """Replace `path` (its folder made if need be) with what `new_text()` returns, called under an
    exclusive lock (`PATH.lock`) so that it reads the file no other writer is changing: written
    beside it, synced and renamed over it, so the file is whole, old or new, whatever fails.
    Whatever `new_text` raises (OutputRefused) leaves the file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale_temporaries(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
        try:
            data = new_text()
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _needs_migration(old: str, table: Table = RUNS) -> bool:
    """Whether `old` has another header or a row of an older schema (read row by row: a file
    near MAX_CSV_BYTES as dicts would take several times its size in memory)."""
    reader = csv.reader(_lines(old))
    columns = table.columns
    if next(reader) != columns:
        return True
    at = [columns.index(c) for c in table.old_defaults]
    status = columns.index("status")
    return any(len(fields) <= max([*at, status]) or fields[status] in OLD_STATUS_NAMES or not all(fields[i] for i in at)
               for fields in reader if fields)


def _merge(old: str, line: str, path: Path, table: Table = RUNS) -> str:
    known = table.columns
    if not old.strip():
        return _header(known) + line
    if not _needs_migration(old, table):
        return (old if old.endswith("\n") else old + "\n") + line
    reader = csv.DictReader(_lines(old))
    rows = list(reader)
    # An older schema: rewrite every row under the current columns, keeping any columns this
    # version does not know at the end so that nothing is lost.
    if any(None in r for r in rows):
        i = next(i for i, r in enumerate(rows) if None in r)
        raise OutputRefused(f"{path}: row {i + 1} has more cells than the header names: not a cnnbench results "
                            "CSV this version can rewrite")
    import pandas as pd

    columns = known + [c for c in reader.fieldnames or [] if c not in set(known)]
    # cells an older writer left raw (a line break in a quoted cell, a formula) are protected now
    cells = [{k: protect_cell(unprotect_cell(v)) if isinstance(v, str) else v for k, v in r.items()} for r in rows]
    migrated = table.migrate(pd.DataFrame(cells, columns=reader.fieldnames, dtype=object))
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", restval="")
    out.write(_header(columns))
    w.writerows(migrated.to_dict("records"))
    w.writerows(dict(zip(known, fields)) for fields in csv.reader(_lines(line)))
    return out.getvalue()


def read_rows(path: str | os.PathLike, table: Table = RUNS):
    """A results CSV as a pandas DataFrame, cells as pandas parses them, protected text cells
    as they were recorded. Only empty cells are missing values; statuses of older schemas get
    their current names."""
    import pandas as pd

    # text columns stay text: a hex run id or commit like 1234e5678901 would otherwise read as a float
    text = {c: str for c, kind in table.column_types.items() if kind == "str"}
    # the python engine keeps a NUL byte inside a cell, where the C parser ends the cell
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], compression=None, dtype=text, engine="python")
    for col in df.columns:
        if df[col].dtype == object or isinstance(df[col].dtype, pd.StringDtype):
            df[col] = df[col].map(unprotect_cell, na_action="ignore")
    df = df.copy()  # one block per dtype again after the columns replaced one by one
    for col in ("status", "error"):
        if col in df:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    return table.migrate(df)
