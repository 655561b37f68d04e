"""Helpers shared by the tests (kept out of conftest.py, whose name tests/benchmarks/ reuses)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import REPO  # conftest.py put the repo on sys.path


def write_cifar100(path: Path, n_train: int = 64, n_test: int = 32, *, seed: int = 0,
                   label_max: int = 99, as_folder: bool = False, truncate: bool = False,
                   bad_shape: bool = False):
    """Write a small data set in the official cifar-100-python format (tar.gz, or extracted).

    Returns {split: (images_nhwc_uint8, labels)} as the loader should decode them.
    """
    import numpy as np

    from bench.data.sets.cifar100 import CIFAR_DIR, cifar100_archive, cifar100_split_pickle

    rng = np.random.default_rng(seed)
    expected, blobs = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        nhwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, label_max + 1, size=n)
        data = nhwc.transpose(0, 3, 1, 2).reshape(n, 3072)  # channel-major rows, as published
        if bad_shape:
            data = data[:, :1024]
        blobs[split] = cifar100_split_pickle(data, labels)
        expected[split] = (nhwc, labels)
    if as_folder:
        root = path / CIFAR_DIR
        root.mkdir(parents=True)
        for split, blob in blobs.items():
            (root / split).write_bytes(blob)
        return expected
    raw = cifar100_archive(blobs)
    path.write_bytes(raw[: len(raw) // 2] if truncate else raw)
    return expected


def run_cli(*args: str, timeout: float = 300, env: dict | None = None):
    """Run `python bench/run.py ARGS` in a subprocess from the repo root."""
    e = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=e)


def session_root(tmp_path_factory) -> Path:
    """The temporary folder of this whole test session: under pytest-xdist, the one every worker's
    own base folder sits in (each worker otherwise makes its own module fixtures again)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder `make(folder)` fills once per test session, whichever xdist worker asks first; the
    others wait on a lock and reuse it. A `make` that raises leaves no folder behind, so the next
    asker tries again (and fails its own test the same way)."""
    shared = session_root(tmp_path_factory) / "made-once"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                make(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            done.touch()
    return folder


def run_once(tmp_path_factory, name: str, command: Callable[[Path], list[str]], *, timeout: float = 300,
             env: dict | None = None, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """`command(folder)` run once per test session (see made_once), its exit code and output kept
    beside what it wrote: (the finished process, as every asker sees it, and its folder)."""
    def make(folder: Path) -> None:
        r = subprocess.run(command(folder), cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
        (folder / "process.json").write_text(json.dumps([r.args, r.returncode, r.stdout, r.stderr]))
    folder = made_once(tmp_path_factory, name, make)
    args, code, out, err = json.loads((folder / "process.json").read_text())
    return subprocess.CompletedProcess(args, code, out, err), folder


def describe_once(tmp_path_factory, name: str, num_classes: int = 100, image_size: int = 32, width: float = 1.0):
    """models.describe(), which is pure and slow at 224x224 (DenseNet-201: seconds): built once
    per session, whichever worker asks first (the README's table, the paper-count tests and the
    memory tests ask for the same ones), and read back by the others."""
    import pickle

    def make(d: Path) -> None:
        import models

        (d / "description.pickle").write_bytes(pickle.dumps(models.describe(
            name, num_classes=num_classes, input_shape=(image_size, image_size, 3), width=width)))
    folder = made_once(tmp_path_factory, f"describe-{name}-{num_classes}-{image_size}-{width}", make)
    return pickle.loads((folder / "description.pickle").read_bytes())


# ---- the cluster paths (tests marked `cluster`) ---------------------------------------------------
HOSTS_LOCK = Path("/tmp/cnnbench-hosts.lock")  # emulated hosts are machine-wide: one test at a time


def require(*needs: str) -> None:
    """Skip, with one line naming what is missing, unless this process is root (where "root" is
    asked) and every named command is installed."""
    import pytest
    missing = [n for n in needs if (n == "root" and os.geteuid() != 0)
               or (n != "root" and shutil.which(n) is None and not Path("/usr/sbin", n).exists())]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (`bash scripts/setup.sh --cluster` as root installs them)")


@contextlib.contextmanager
def emulated_hosts(n: int = 2, link: str = "none"):
    """N emulated hosts (launch.hosts) for one test, under a machine-wide lock, always torn down; on
    the way out, that `down` left nothing behind (no namespace, link, sshd or file of ours)."""
    require("root", "ip", "tc", "taskset", "sshd")
    from launch import hosts
    HOSTS_LOCK.touch()
    with open(HOSTS_LOCK) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with hosts.emulated(n, link) as made:
                yield made
            # checked under the lock: the next test's hosts may come up the moment it is released
            left = hosts.leftovers()
            assert not left["namespaces"] and not left["links"], f"down left {left}"
            assert not list(Path("/etc/netns").glob(f"{hosts.PREFIX}-*")) and not hosts.STATE_DIR.exists()
            assert not subprocess.run(["pgrep", "-f", str(hosts.STATE_DIR)], capture_output=True).stdout
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_image_folder(root: Path, classes: int = 2, per_class: int = 3, *, fmt: str = "JPEG",
                       sizes: tuple[tuple[int, int], ...] = ((40, 30), (64, 48), (48, 64)), seed: int = 0) -> Path:
    """A tiny class-folder image set written with Pillow (not by cnnbench's own generator), each
    image a smooth gradient: red follows x, green follows y, blue the class, so a crop's place
    and a flip show in its pixels. Returns `root`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            w, h = sizes[int(rng.integers(len(sizes)))]
            x = np.zeros((h, w, 3), np.uint8)
            x[..., 0] = np.linspace(0, 255, w)[None, :]
            x[..., 1] = np.linspace(0, 255, h)[:, None]
            x[..., 2] = 40 + 80 * c
            Image.fromarray(x).save(folder / f"img_{k}.{ext}", fmt)
    return root


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root: (size, mtime_ns) — what 'nothing written' is checked against."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out
