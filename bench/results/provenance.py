"""What every row records about where it was measured: the commit, the machine, the versions, a run id, checksums."""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import os
import platform
import socket
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    pass
from bench import REPO
from bench.results.columns import SCHEMA_VERSION


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
