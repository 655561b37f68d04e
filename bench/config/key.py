"""Which runs measured the same configuration: the key of a row or a `RunConfig`."""
from __future__ import annotations

import math
from typing import Any

from bench.config.schema import KEY_FIELDS, RunConfig, schema

# ---- which runs measured the same configuration -----------------------------------------------
# set by the strategy, the launcher and the machine, not by one option: a run across hosts (and over
# which link) is another configuration than the same processes on one host
TOPOLOGY_KEY = ["workers", "replicas", "hosts", "link_gbps"]
TOPOLOGY_KINDS = {"workers": "int", "replicas": "int", "hosts": "int", "link_gbps": "float"}
# How a boolean cell may read in a CSV (pandas and older rows wrote 1/0 and 1.0/0.0), lower-cased
BOOL_CELLS = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


def _missing(v: Any) -> bool:
    """None, NaN, an empty cell, or pandas' NA/NaT (named by type: no pandas import here)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    if isinstance(v, str):
        return v.strip() == ""
    return type(v).__name__ in ("NAType", "NaTType")


def normalise(kind: str, v: Any) -> Any:
    """A cell or a config value as the key compares it: None for missing, else its kind's type.
    A value that does not parse stays a string, so it never equals a real value."""
    if _missing(v):
        return None
    try:
        if kind == "bool":
            s = str(v).strip().lower()
            return BOOL_CELLS.get(s, str(v))
        if kind == "int":
            f = float(v)
            return int(f) if f.is_integer() else f
        if kind == "float":
            return float(v)
    except (TypeError, ValueError, OverflowError):
        return str(v)
    return str(v)


def config_key(row_or_cfg: Any, **extra: Any) -> tuple:
    """The identity of a configuration: every key field of the schema, plus the topology
    (workers, replicas, hosts, link). Takes a result row (dict or pandas Series) or a RunConfig (then give
    the topology as keywords). Two rows that differ in any of these are two configurations."""
    if isinstance(row_or_cfg, RunConfig):
        values = {name: getattr(row_or_cfg, name) for name in KEY_FIELDS}
    else:
        values = {name: row_or_cfg.get(name) for name in KEY_FIELDS + TOPOLOGY_KEY}
    values.update(extra)
    if _missing(values.get("hosts")):  # rows before schema 7, and a configuration not yet run: one host
        values["hosts"] = 1
    kinds = {**TOPOLOGY_KINDS, **{name: o.kind for name, o in schema().items()}}
    return tuple(normalise(kinds[name], values.get(name)) for name in KEY_FIELDS + TOPOLOGY_KEY)
