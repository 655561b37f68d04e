"""Results files to one typed pandas DataFrame (every cell parsed by its column's type, old schemas migrated)."""
from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Iterable

from bench.config.key import BOOL_CELLS, config_key
from bench.errors import BenchInputError
from bench.results.columns import COLLECTIVES, REQUIRED, RUNS, Table, input_only, predicted
from bench.results.store import OutputRefused, read_existing, unprotect_cell

# ---- typed loading (reports, notebooks) ---------------------------------------------------------
_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "time": "a UTC timestamp"}


def _exact_number(cell: object) -> float:
    """Python's float(), which reads back exactly the repr the writer wrote (pandas' own number
    parsers can land one unit in the last place off); NaN for what is not a plain number."""
    text = str(cell)
    if "_" in text:  # float() takes 1_000; a CSV cell holding it is not a number
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _typed(cells, kind: str):
    """A column of raw text cells in its schema type, and the mask of cells that do not parse."""
    import pandas as pd

    present = cells.notna() & (cells.astype("string").str.strip() != "")
    if kind in ("int", "float"):
        values = cells.map(_exact_number, na_action="ignore").astype(float)
        bad = present & values.isna() & ~cells.astype("string").str.strip().str.lower().isin(["nan"])
        if kind == "int":
            bad |= present & values.notna() & (values != values.round())
            values = values.where(~bad).astype("Float64").round().astype("Int64")
        return values.astype(float) if kind == "float" else values, bad
    if kind == "bool":
        values = cells.map(lambda v: BOOL_CELLS.get(str(v).strip().lower(), pd.NA) if pd.notna(v) else pd.NA)
        return values.astype("boolean"), present & values.isna()
    if kind == "time":
        values = pd.to_datetime(cells, utc=True, errors="coerce", format="ISO8601")
        return values, present & values.isna()
    return cells.astype("string"), present & False


def _results_text(path: Path, table: Table = RUNS) -> str:
    """A results file's text, or BenchInputError naming why it is not a cnnbench CSV."""

    if not path.exists():
        raise BenchInputError(f"no such results file: {path}")
    try:
        text = read_existing(path, table)
    except OutputRefused as e:
        raise BenchInputError(str(e).replace("exists and is not", "is not")) from None
    except OSError as e:
        raise BenchInputError(f"cannot read results file {path}: {e.strerror or e}") from None
    if not text.strip():
        raise BenchInputError(f"{path} is empty: not a cnnbench results CSV")
    return text


def _load_one(path: Path, table: Table = RUNS):
    """One results file of `table`'s kind, typed, every cell checked: BenchInputError names a
    corrupted cell by file, row (1 = the first data row) and column."""
    import pandas as pd

    required = REQUIRED if table is RUNS else list(table.header_marks)
    try:
        # the python engine: pandas' C parser ends a cell at a NUL byte (pandas 3.0.6)
        raw = pd.read_csv(io.StringIO(_results_text(path, table)), dtype=str, keep_default_na=False,
                          na_values=[""], engine="python")
    except pd.errors.ParserError as e:
        raise BenchInputError(f"{path} is not a readable CSV: {e}") from None
    for c in raw.columns:
        raw[c] = raw[c].map(unprotect_cell, na_action="ignore")
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise BenchInputError(f"{path} is not a cnnbench {table.name} file (no {', '.join(missing)} column)")
    typed = {}
    for c, kind in table.column_types.items():
        if c not in raw.columns:
            typed[c] = pd.Series(pd.NA, index=raw.index, dtype=object)  # older schema: newer columns are empty
            continue
        typed[c], bad = _typed(raw[c], kind)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise BenchInputError(f"{path}: row {i + 1}, column {c}: {raw[c].iloc[i]!r} is not {_KIND_WORDS[kind]}")
    # built at once, the raw file's columns first (unknown ones kept): a frame grown column by column
    # is fragmented, and pandas warns on stderr at every later insert
    df = pd.DataFrame({**{c: typed.get(c, raw[c]) for c in raw.columns}, **typed}, index=raw.index)
    if df["schema_version"].isna().any():
        i = int(df["schema_version"].isna().to_numpy().nonzero()[0][0])
        raise BenchInputError(f"{path}: row {i + 1}, column schema_version: the cell is empty")
    if (df["schema_version"] > table.schema_version).any():
        raise BenchInputError(f"{path} was written by a newer cnnbench (schema "
                              f"{df['schema_version'].max()} > {table.schema_version}); upgrade to read it")
    df["status"] = df["status"].fillna("")
    table.migrate(df)
    df["error"] = df["error"].fillna("")
    df["source_file"] = str(path)
    return df.copy()  # one block per dtype again after the migration's replacements


def kind_of(path: str | os.PathLike) -> Table:
    """Which kind of cnnbench CSV a file is, by its header: collectives (bench.collectives) where it
    has their marks and no model, else results (what _load_one then checks)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            header = set(f.readline().strip().split(","))
    except OSError:
        return RUNS
    return COLLECTIVES if set(COLLECTIVES.header_marks) <= header and "model" not in header else RUNS


def load_collectives(paths: Iterable[str | os.PathLike]):
    """Collective-bandwidth CSVs (python -m bench.collectives) as one typed DataFrame, with `source_file`."""
    import pandas as pd

    frames = [_load_one(Path(p), COLLECTIVES) for p in paths]
    if not frames:
        return pd.DataFrame(columns=[*COLLECTIVES.columns, "source_file"])
    return pd.concat(frames, ignore_index=True, sort=False)


@dataclasses.dataclass(frozen=True, eq=False)
class Apart:
    """Rows a results DataFrame carries beside its own, in its attrs. Held in this, not as a
    DataFrame: pandas compares two frames' attrs with == when it concatenates or merges them, and
    a DataFrame answers == with another DataFrame, not a truth value (this one: identity)."""
    frame: Any


def apart(df: Any, kind: str) -> Any:
    """The rows of `kind` (collectives, predictions, inputs) that load_results kept beside `df`'s own; an
    empty DataFrame where there are none."""
    import pandas as pd

    held = df.attrs.get(kind)
    return held.frame if isinstance(held, Apart) else pd.DataFrame()


def load_results(paths: Iterable[str | os.PathLike]):
    """One or more cnnbench CSVs as one DataFrame, each column typed by the schema (integers,
    floats, booleans, strings, UTC timestamps), with `source_file` and `config_key` added.
    Collective-bandwidth CSVs among them (kind_of) are loaded apart, as `apart(df, "collectives")`
    (bench.report's collective section reads them there), and so are predictions
    (source=prediction, `cnnbench predict`), as `apart(df, "predictions")`: no table, finding or
    comparison of measured rows ever sees a predicted one; and so are the input pipeline's own
    runs (--mode input, no model), as `apart(df, "inputs")`: an input ceiling is no model's
    throughput (bench.report.inputs sets them beside training).

    Files from an older schema load with the newer columns empty. A file that is not a
    cnnbench CSV, is from a newer schema, or holds a cell that does not parse as its column's
    type raises BenchInputError naming the file (and the row and column)."""
    import pandas as pd

    paths = [Path(p) for p in paths]
    if not paths:
        raise BenchInputError("no results files given")
    collective = [p for p in paths if kind_of(p) is COLLECTIVES]
    frames = [_load_one(p) for p in paths if p not in collective]
    if frames:
        df = pd.concat(frames, ignore_index=True, sort=False)
    else:  # collectives only: an empty, typed results table
        df = _load_one_empty()
    df = df.copy()  # defragmented once more after the concatenation
    df["config_key"] = [config_key(r) for r in df.to_dict("records")]
    held = {}
    for kind, which in (("predictions", predicted), ("inputs", input_only)):
        rows = which(df)
        if rows.any():
            held[kind] = Apart(df[rows].reset_index(drop=True))
            df = df[~rows].reset_index(drop=True)
    if collective:
        held["collectives"] = Apart(load_collectives(collective))
    df.attrs.update(held)
    return df


def _load_one_empty():
    import pandas as pd

    df = pd.DataFrame({c: pd.Series(dtype=object) for c in RUNS.columns})
    for c, kind in RUNS.column_types.items():
        df[c], _ = _typed(df[c], kind)
    df["source_file"] = pd.Series(dtype="string")
    return df
