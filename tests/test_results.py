"""Result rows: schema, atomic append, concurrent writers, schema migration, failures."""
import csv
import io
import multiprocessing as mp
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO

from bench.results import columns, load, provenance, store
from bench.results.columns import COLUMNS
from bench.results.store import append_row, format_row

TINY = ["--width", "0.125", "--steps", "3", "--warmup-steps", "1", "--batch-size", "8", "--no-progress"]


def _row(i: int) -> dict:
    return {"schema_version": columns.SCHEMA_VERSION, "model": f"m{i}", "images_per_sec": 1.5 * i,
            "status": "ok", "error": "a, \"quoted\"\nmessage"}


def test_every_status_is_written_as_its_text_and_unknown_ones_are_refused(tmp_path):
    from bench.config.schema import RunConfig
    from bench.errors import Status
    from bench.results.row import Outcome, Topology, build_row

    assert columns.STATUSES == ("ok", "diverged", "failed", "oom", "oom_predicted", "timeout")
    cfg = RunConfig(model="vgg11", batch_size=8).resolved(has_gpu=False)
    out = tmp_path / "runs.csv"
    for status in Status:
        row = build_row(cfg, Outcome(status), topology=Topology(1, 1, 8, 8))
        assert type(row["status"]) is str and row["status"] == status.value
        append_row(out, {**row, "error": status})  # the enum itself, too, is written as its text
    assert Outcome("oom").status is Status.OOM
    with pytest.raises(ValueError):
        Outcome("nan")  # schema 1's name: read as diverged, never written
    with open(out, newline="") as f:
        written = [(r["status"], r["error"]) for r in csv.DictReader(f)]
    assert written == [(s.value, s.value) for s in Status]


def test_header_once_and_rows_roundtrip(tmp_path):
    out = tmp_path / "sub" / "runs.csv"
    for i in range(3):
        append_row(out, _row(i))
    text = out.read_text()
    assert text.count("schema_version,") == 1 and text.count("\n") == 4  # one line a row
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert df["model"].tolist() == ["m0", "m1", "m2"]
    assert df["images_per_sec"].tolist() == [0.0, 1.5, 3.0]
    assert df["error"][0] == "'a, \"quoted\"\\nmessage"  # protected: a plain reader sees the escape
    assert store.read_rows(out)["error"][0] == 'a, "quoted"\nmessage'


def test_every_float_reads_back_to_the_bit_it_was_written(tmp_path):
    """Each needs all 17 significant digits; pandas' own number parsers land one unit in the last
    place off on the first (446.4547807048973), which a report's exact comparison then misses."""
    values = [446.45478070489725, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, -2.2250738585072014e-308]
    out = tmp_path / "runs.csv"
    for i, v in enumerate(values):
        append_row(out, {**_row(i), "images_per_sec_median": v})
    got = load.load_results([out])["images_per_sec_median"].tolist()
    assert [v.hex() for v in got] == [v.hex() for v in values]


def test_ids_that_look_like_numbers_read_back_as_text(tmp_path):
    """A sweep finds its child's row by run id; 1234e5678901 must not come back as 1.234e+5681."""
    out = tmp_path / "runs.csv"
    ids = ["123456789012", "1234e5678901", "0000000000e1"]
    for run_id in ids:
        append_row(out, {**_row(1), "run_id": run_id, "git_commit": run_id})
    df = store.read_rows(out)
    assert df["run_id"].tolist() == ids and df["git_commit"].tolist() == ids
    assert df["images_per_sec"].dtype.kind == "f"
    fresh = {provenance.new_run_id() for _ in range(2000)}
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
    p = provenance.provenance(["GPU-X"])
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


def _raw_line(row: dict) -> str:
    """A row as writers before issue 21 wrote it: a line break inside a quoted cell."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([store._cell(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def test_a_torn_quoted_multiline_cell_is_dropped_whole(tmp_path):
    out = tmp_path / "runs.csv"
    out.write_text(store._header(COLUMNS) + _raw_line(_row(1)))
    line = _raw_line(_row(2))
    cut = line.index("\nmessage") + 3  # inside the quoted, multi-line error cell
    out.write_text(out.read_text() + line[:cut])
    append_row(out, _row(3))
    df = store.read_rows(out)
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
    with pytest.raises(store.OutputRefused, match="not a cnnbench results CSV"):
        append_row(foreign, _row(1))
    assert foreign.read_text() == "a,b\n1,2\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(store.OutputRefused, match="FIFO"):
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

    store.check_output(tmp_path / "new" / "runs.csv")  # a new path is fine
    (tmp_path / "empty.csv").write_text("")
    store.check_output(tmp_path / "empty.csv")  # an empty file holds nothing to lose
    (tmp_path / "notes.txt").write_text("my notes\n")
    with pytest.raises(BenchInputError, match="notes.txt"):
        store.check_output(tmp_path / "notes.txt")
    with pytest.raises(BenchInputError, match="directory"):
        store.check_output(tmp_path)


# ---- issue 21: every byte a cell can hold, the size cap, headers the writer must not rewrite ----
HOSTILE = ["<script>alert(1)</script>", "a\rb", "a\nb", "\r\n", "tab\there", "nul\x00bel\x07esc\x1bdel\x7f",
           "c1\x85\x9b fs\x1c", "ls\u2028ps\u2029", "$x^2$", "$\\alpha$", "=1+1", "+x", "-x", "@x", "\t=1", "\r=1",
           " =HYPERLINK(\"http://x\")", "=cmd|' /C calc'!A0", "'quoted", "''", "'", "\\n is not a newline",
           "C:\\dir\\new", "x\\", "-1.5", "+2", "undecodable \udcff name", 'a, "quoted", cell', "é ü 漢字"]
TEXT_COLUMNS = [c for c, kind in columns.COLUMN_TYPES.items() if kind == "str"]


def _hostile_row(value: str) -> dict:
    return {**{c: value for c in TEXT_COLUMNS}, "schema_version": columns.SCHEMA_VERSION, "batch_size": 8,
            "final_loss": -1.5, "images_per_sec": -0.0025, "timed_steps": -3}


def test_hostile_text_in_every_text_column_round_trips(tmp_path):
    out = tmp_path / "runs.csv"
    for value in HOSTILE:
        append_row(out, _hostile_row(value))
    text = out.read_text(encoding="utf-8")
    # one record, one line, whatever splits lines: bytes, str.splitlines (U+2028, \x1c, \x85 ...)
    assert len(out.read_bytes().splitlines()) == len(text.splitlines()) == len(HOSTILE) + 1
    number = re.compile(r"[+-]?\d+(\.\d+)?(e[+-]?\d+)?")
    for fields in list(csv.reader(io.StringIO(text)))[1:]:
        for cell in fields:  # what a spreadsheet sees: no formula, no control character
            assert number.fullmatch(cell) or not cell.lstrip(" ").startswith(tuple("=+-@\t\r")), cell
            assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", cell), cell
    plain = pd.read_csv(out)  # numbers stay numbers for a plain reader
    assert plain["final_loss"].tolist() == [-1.5] * len(HOSTILE)
    assert plain["timed_steps"].tolist() == [-3] * len(HOSTILE)
    assert plain["model"][0] == HOSTILE[0] and plain["model"][HOSTILE.index("=1+1")] == "'=1+1"
    rows, loaded = store.read_rows(out), load.load_results([out])
    for c in TEXT_COLUMNS:
        assert rows[c].tolist() == HOSTILE, c
        assert loaded[c].astype(object).tolist() == HOSTILE, c
    assert loaded["final_loss"].tolist() == [-1.5] * len(HOSTILE)
    assert loaded["images_per_sec"].tolist() == [-0.0025] * len(HOSTILE)


def test_rows_migrated_from_an_older_writer_are_protected_and_read_the_same(tmp_path):
    out = tmp_path / "runs.csv"
    old_columns = [c for c in COLUMNS if c != "form"]  # schema 4: no form column
    cells = {"schema_version": 4, "model": "=1+1", "status": "ok", "error": "two\nlines"}
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([old_columns, [cells.get(c, "") for c in old_columns]])
    out.write_text(buf.getvalue())
    assert store.read_rows(out)["error"].tolist() == ["two\nlines"]
    append_row(out, _row(1))
    assert len(out.read_text().splitlines()) == 3
    df = store.read_rows(out)
    assert df["model"].tolist() == ["=1+1", "m1"] and df["error"].tolist() == ["two\nlines", _row(1)["error"]]
    assert df["form"].tolist() == ["auto", "auto"]


def test_a_complete_last_row_with_trimmed_empty_cells_is_kept(tmp_path, caplog):
    out = tmp_path / "runs.csv"
    append_row(out, _row(1))
    whole = out.read_text()
    trimmed = format_row({**_row(2), "error": ""}).rstrip("\n").rstrip(",")  # what some editors save
    assert trimmed.endswith(",ok")
    out.write_text(whole + trimmed)
    assert pd.read_csv(out)["model"].tolist() == ["m1", "m2"]  # a reader accepts it
    append_row(out, _row(3))
    assert pd.read_csv(out)["model"].tolist() == ["m1", "m2", "m3"]
    assert "dropped" not in caplog.text
    out.write_text(whole + trimmed[:-1])  # cut inside its status: "o" is no run's status
    append_row(out, _row(4))
    assert pd.read_csv(out)["model"].tolist() == ["m1", "m4"] and "dropped a partial last line" in caplog.text


@pytest.mark.parametrize("case", ["newer-schema", "duplicated-column"])
def test_a_header_the_writer_would_not_read_is_never_rewritten(tmp_path, case):
    from bench.errors import BenchInputError

    out = tmp_path / "runs.csv"
    append_row(out, _row(1))
    if case == "newer-schema":
        append_row(out, {**_row(2), "schema_version": columns.SCHEMA_VERSION + 1})
        fragment = "newer schema"
    else:
        lines = out.read_text().split("\n")
        out.write_text("\n".join([lines[0] + ",model", *(l + ",again" if l else l for l in lines[1:])]))
        fragment = "'model' twice"
    before = out.read_bytes()
    with pytest.raises(store.OutputRefused, match=fragment):
        append_row(out, _row(3))
    with pytest.raises(BenchInputError, match=fragment):
        store.check_output(out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    if case == "duplicated-column":
        with pytest.raises(BenchInputError, match=fragment):
            load.load_results([out])


def test_the_writer_never_grows_a_file_past_what_readers_accept(tmp_path, monkeypatch):
    from bench.errors import BenchInputError

    out = tmp_path / "runs.csv"
    append_row(out, _row(1))
    append_row(out, _row(2))
    before = out.read_bytes()
    monkeypatch.setattr(store, "MAX_CSV_BYTES", len(before) + 100)  # room for less than a row
    monkeypatch.setattr(store, "ROW_ROOM", 50)
    store.check_output(out)  # up front the file still has its room
    with pytest.raises(store.OutputRefused, match="pass --output NEW.csv"):
        append_row(out, _row(3))
    assert out.read_bytes() == before
    assert store.read_existing(out) == before.decode()  # and readers still accept it
    monkeypatch.setattr(store, "ROW_ROOM", 200)
    with pytest.raises(BenchInputError, match=r"runs.csv holds \d+ bytes.*pass --output NEW.csv"):
        store.check_output(out)  # up front, before a run trains for nothing
    assert out.read_bytes() == before


def test_a_file_split_by_a_raw_line_break_is_refused_up_front(tmp_path):
    """What writers before issue 21 left for a carriage return in a cell: the run must not train
    only to lose its row with a traceback."""
    from bench.errors import BenchInputError

    out = tmp_path / "runs.csv"
    out.write_text(store._header(COLUMNS) + _raw_line({**_row(1), "error": "", "model": "a\rb"}))
    before = out.read_bytes()
    with pytest.raises(BenchInputError, match="not a readable CSV"):
        store.check_output(out)
    with pytest.raises(store.OutputRefused, match="not a readable CSV"):
        append_row(out, _row(2))
    assert out.read_bytes() == before


@pytest.mark.slow
def test_run_refuses_with_exit_2_when_its_row_would_cross_the_cap(tmp_path):
    """The file grew while the run ran (another writer): one line, exit 2, the file as it was."""
    out = tmp_path / "runs.csv"
    append_row(out, _row(1))
    before = out.read_bytes()
    code = ("import sys; sys.path.insert(0, '.'); import bench.results.store as r; "
            f"r.MAX_CSV_BYTES = {len(before) + 100}; r.ROW_ROOM = 0; import bench.run; "
            f"sys.exit(bench.run.main(['vgg11', *{TINY!r}, '--output', {str(out)!r}]))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: no row written:") and "pass --output NEW.csv" in lines[0]
    assert out.read_bytes() == before


@pytest.mark.slow
def test_a_real_run_in_a_folder_named_with_a_carriage_return_keeps_its_row_on_one_line(tmp_path, profiled_runs):
    """The break as found: a CR in the output folder's name reached the row through trace_dir,
    unquoted, and the next append (a later run's) died with a traceback."""
    import shutil

    p, written = profiled_runs("jax")  # vgg11 on JAX, profiled, its CSV in a folder named "=1+1\rfolder <script>"
    assert p.returncode == 0, p.stderr[-2000:]
    assert "\r" in str(written.parent)
    out = tmp_path / "runs.csv"  # the next append goes to a copy: the run's own CSV is shared
    shutil.copy(written, out)
    append_row(out, _row(1))
    assert len(out.read_bytes().splitlines()) == 3 and len(pd.read_csv(out)) == 2
    df = store.read_rows(out)
    assert df["trace_dir"][0] == str(written.parent / "traces" / df["run_id"][0])
    assert load.load_results([out])["trace_dir"][0] == df["trace_dir"][0]
