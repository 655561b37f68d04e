"""Result rows: schema, atomic append, concurrent writers, schema migration, failures."""
import csv
import multiprocessing as mp
import os
from pathlib import Path

import pandas as pd
import pytest

from bench import results
from bench.results import COLUMNS, append_row, format_row


def _row(i: int) -> dict:
    return {"schema_version": results.SCHEMA_VERSION, "model": f"m{i}", "images_per_sec": 1.5 * i,
            "status": "ok", "error": "a, \"quoted\"\nmessage"}


def test_header_once_and_rows_roundtrip(tmp_path):
    out = tmp_path / "sub" / "runs.csv"
    for i in range(3):
        append_row(out, _row(i))
    text = out.read_text()
    assert text.count("schema_version,") == 1
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert df["model"].tolist() == ["m0", "m1", "m2"]
    assert df["images_per_sec"].tolist() == [0.0, 1.5, 3.0]
    assert df["error"][0] == 'a, "quoted"\nmessage'


def test_unknown_column_is_rejected():
    with pytest.raises(KeyError, match="bogus"):
        format_row({"bogus": 1})


def _writer(path, start):
    for i in range(start, start + 15):
        append_row(path, _row(i))


def test_concurrent_writers_never_tear_rows(tmp_path):
    out = tmp_path / "runs.csv"
    procs = [mp.get_context("fork").Process(target=_writer, args=(out, k * 100)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    df = pd.read_csv(out)
    assert len(df) == 60 and df["model"].nunique() == 60
    assert (df["status"] == "ok").all()


def test_failed_write_leaves_file_unchanged(tmp_path, monkeypatch):
    out = tmp_path / "runs.csv"
    append_row(out, _row(1))
    before = out.read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        append_row(out, _row(2))
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_old_schema_is_migrated_on_write(tmp_path):
    out = tmp_path / "runs.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["schema_version", "model", "images_per_sec", "status", "legacy_note"])
        w.writerow([0, "old", 10.0, "ok", "kept"])
    append_row(out, _row(5))
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS + ["legacy_note"]
    assert df["model"].tolist() == ["old", "m5"]
    assert df["legacy_note"][0] == "kept"
    assert df["images_per_sec"].tolist() == [10.0, 7.5]


def test_provenance_fields():
    p = results.provenance(["GPU-X"])
    for k in ["timestamp_utc", "git_commit", "hostname", "cpu_model", "python_version", "tf_version",
              "keras_version", "horovod_version"]:
        assert p[k] not in ("", None), k
    assert p["gpu_names"] == "GPU-X"
    assert p["tf_version"].startswith("2.21")
