"""Writing a report into its folder: only files the report owns, all of them or none.

`--out` is a folder a user chose, and may hold their own files. The report keeps a manifest,
`.cnnbench-report`, listing the files it wrote there. It overwrites or deletes a file only if
that manifest lists it; a file of one of its names that the manifest does not list (a user's
`throughput.png`, or a report from a version without manifests) is refused: nothing is
written, and the error names the file. Plots left over from an earlier report of other rows
are deleted only if the manifest lists them; a user's file of such a name is left alone.

Every file is written UTF-8, whatever the locale, to a temporary file first; only when all are
complete are they renamed into place. A full disk or any other write error leaves the folder
as it was (and removes a folder the report created).
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

from bench.errors import BenchInputError

MANIFEST = ".cnnbench-report"
_KIND = "cnnbench report manifest"
MANIFEST_MAX_BYTES = 2**20  # a handful of names; anything larger is not ours to read
# a write that failed for lack of room or a failing device is no fault of the user's input
DEVICE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}  # a read-only folder is a bad --out: exit 2


class ReportWriteError(OSError):
    """The folder was right but writing into it failed (disk full, I/O error): exit 1."""


def read_manifest(out: Path) -> set[str]:
    """The names an earlier report wrote into `out` (none if there is no manifest). A file of
    the manifest's name that is not one is a user's file: BenchInputError."""
    path = out / MANIFEST
    if not path.exists() and not path.is_symlink():
        return set()
    try:
        regular = path.is_file() and not path.is_symlink() and path.stat().st_size <= MANIFEST_MAX_BYTES
        data = json.loads(path.read_bytes().decode("utf-8")) if regular else None
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    files = data.get("files") if isinstance(data, dict) and data.get("kind") == _KIND else None
    if not isinstance(files, list) or not all(isinstance(f, str) and f and "/" not in f and f not in (".", "..")
                                              for f in files):
        raise BenchInputError(f"refusing out={out}: {path} is not a cnnbench report manifest; "
                              "choose another --out or move that file away")
    return set(files)


def _manifest_bytes(names: set[str]) -> bytes:
    return (json.dumps({"kind": _KIND, "files": sorted(names)}, indent=1) + "\n").encode("utf-8")


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def check_out(out: Path, names: set[str]) -> set[str]:
    """Before anything is built: BenchInputError unless every one of `names` can be written in
    `out` without overwriting a file the report does not own. Returns the names it owns."""
    if _exists(out) and not out.is_dir():
        raise BenchInputError(f"cannot write the report to out={out}: it exists and is not a folder")
    if not out.exists():
        return set()
    owned = read_manifest(out)
    for name in sorted(names):
        p = out / name
        if _exists(p) and (name not in owned or p.is_symlink() or not p.is_file()):
            why = "it is not a regular file" if name in owned else f"no {MANIFEST} here lists it as the report's own"
            raise BenchInputError(f"refusing to overwrite {p}: {why}; choose another --out or move it away")
    return owned


def _missing_parents(out: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` would create for `out`, outermost first."""
    made, p = [], out
    while not _exists(p) and p != p.parent:
        made.append(p)
        p = p.parent
    return made[::-1]


def write_files(out: Path, files: Mapping[str, bytes], stale: set[str] = frozenset()) -> list[Path]:
    """Write `files` (name -> bytes) into `out` all at once; delete the `stale` names the
    manifest lists; record the written names in the manifest. BenchInputError if a file is not
    the report's to write; ReportWriteError if the disk fails (then nothing changed)."""
    out = Path(out)
    owned = check_out(out, set(files))
    owned = {n for n in owned if _exists(out / n)}  # a name the user removed is no longer the report's
    gone = (owned & set(stale)) - set(files)
    created = _missing_parents(out)
    temps: dict[str, str] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        # the manifest is renamed in twice: first naming old and new files, so that no file of
        # the report's is ever in place unlisted; last without the stale plots it deleted
        both = {**files, MANIFEST: _manifest_bytes(owned | set(files)),
                MANIFEST + ".final": _manifest_bytes((owned | set(files)) - gone)}
        for name, data in both.items():
            fd, temps[name] = tempfile.mkstemp(dir=out, prefix=".cnnbench-report-", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(temps.pop(MANIFEST), out / MANIFEST)
        for name in files:
            os.replace(temps.pop(name), out / name)
        for name in sorted(gone):
            (out / name).unlink(missing_ok=True)
        os.replace(temps.pop(MANIFEST + ".final"), out / MANIFEST)
    except OSError as e:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
        temps.clear()
        for d in reversed(created):  # the folders this report made, if nothing else is in them
            try:
                d.rmdir()
            except OSError:
                break
        if e.errno in DEVICE_ERRNOS:
            raise ReportWriteError(e.errno, f"cannot write the report to out={out}: {e.strerror}; "
                                            "the folder is as it was") from None
        raise BenchInputError(f"cannot write the report to out={out}: {e.strerror or e}") from None
    finally:
        for tmp in temps.values():  # whatever stopped the writing (an error, Ctrl-C): no temporary stays
            Path(tmp).unlink(missing_ok=True)
    return [out / name for name in files]
