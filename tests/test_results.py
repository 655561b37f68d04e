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


def test_ids_that_look_like_numbers_read_back_as_text(tmp_path):
    """A sweep finds its child's row by run id; 1234e5678901 must not come back as 1.234e+5681."""
    out = tmp_path / "runs.csv"
    ids = ["123456789012", "1234e5678901", "0000000000e1"]
    for run_id in ids:
        append_row(out, {**_row(1), "run_id": run_id, "git_commit": run_id})
    df = results.read_rows(out)
    assert df["run_id"].tolist() == ids and df["git_commit"].tolist() == ids
    assert df["images_per_sec"].dtype.kind == "f"
    fresh = {results.new_run_id() for _ in range(2000)}
    assert all(any(c in "abcdf" for c in run_id) and len(run_id) == 12 for run_id in fresh)


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


# ---- output safety ------------------------------------------------------------------------------
def test_a_torn_last_line_is_dropped_and_a_complete_one_kept(tmp_path, caplog):
    out = tmp_path / "runs.csv"
    append_row(out, _row(1))
    whole = out.read_text()
    torn = whole + format_row(_row(2))[:40]  # a writer that was not ours died mid-row
    out.write_text(torn)
    append_row(out, _row(3))
    assert pd.read_csv(out)["model"].tolist() == ["m1", "m3"]
    assert "dropped a partial last line" in caplog.text
    out.write_text(whole + format_row(_row(4)).rstrip("\n"))  # complete, only its newline missing
    append_row(out, _row(5))
    assert pd.read_csv(out)["model"].tolist() == ["m1", "m4", "m5"]


def test_a_torn_quoted_multiline_cell_is_dropped_whole(tmp_path):
    out = tmp_path / "runs.csv"
    append_row(out, _row(1))
    line = format_row(_row(2))
    cut = line.index("\nmessage") + 3  # inside the quoted, multi-line error cell
    out.write_text(out.read_text() + line[:cut])
    append_row(out, _row(3))
    df = pd.read_csv(out)
    assert df["model"].tolist() == ["m1", "m3"] and df["error"].tolist() == [_row(1)["error"]] * 2


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    out = tmp_path / "runs.csv"
    append_row(out, _row(1))
    p = mp.get_context("fork").Process(target=os._exit, args=(0,))
    p.start()
    p.join()
    dead = tmp_path / f".runs.csv.{p.pid}.abcdef.tmp"
    alive = tmp_path / f".runs.csv.{os.getpid()}.abcdef.tmp"
    dead.write_text("x" * 1000)
    alive.write_text("y")
    append_row(out, _row(2))
    assert not dead.exists() and alive.exists()


def test_the_writer_never_replaces_what_it_does_not_recognise(tmp_path):
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(results.OutputRefused, match="not a cnnbench results CSV"):
        append_row(foreign, _row(1))
    assert foreign.read_text() == "a,b\n1,2\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(results.OutputRefused, match="FIFO"):
        append_row(fifo, _row(1))
    assert Path(fifo).is_fifo()


def test_a_symlink_to_a_results_file_stays_a_link(tmp_path):
    real = tmp_path / "real.csv"
    append_row(real, _row(1))
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    append_row(link, _row(2))
    assert link.is_symlink() and pd.read_csv(real)["model"].tolist() == ["m1", "m2"]


def test_check_output_refuses_before_anything_runs(tmp_path):
    from bench.errors import BenchInputError

    results.check_output(tmp_path / "new" / "runs.csv")  # a new path is fine
    (tmp_path / "empty.csv").write_text("")
    results.check_output(tmp_path / "empty.csv")  # an empty file holds nothing to lose
    (tmp_path / "notes.txt").write_text("my notes\n")
    with pytest.raises(BenchInputError, match="notes.txt"):
        results.check_output(tmp_path / "notes.txt")
    with pytest.raises(BenchInputError, match="directory"):
        results.check_output(tmp_path)
