"""Results files to one typed pandas DataFrame (every cell parsed by its column's type, old schemas migrated)."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

from bench.config.key import BOOL_CELLS, config_key
from bench.errors import BenchInputError
from bench.results.columns import (
    COLUMN_TYPES,
    REQUIRED,
    SCHEMA_VERSION,
    migrate,
)
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


def _results_text(path: Path) -> str:
    """A results file's text, or BenchInputError naming why it is not a cnnbench CSV."""

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

    try:
        # the python engine: pandas' C parser ends a cell at a NUL byte (pandas 3.0.6)
        raw = pd.read_csv(io.StringIO(_results_text(path)), dtype=str, keep_default_na=False, na_values=[""],
                          engine="python")
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
    df["status"] = df["status"].fillna("")
    migrate(df)
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


    frames = [_load_one(Path(p)) for p in paths]
    if not frames:
        raise BenchInputError("no results files given")
    df = pd.concat(frames, ignore_index=True, sort=False)
    df["config_key"] = [config_key(r) for r in df.to_dict("records")]
    return df
