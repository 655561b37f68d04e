"""What memory a run really uses and has left: /proc and cgroup readings, the process's peak, the timed steps' peak (host or device), and the guard that ends a run before the kernel's OOM killer would."""
from __future__ import annotations

import contextlib
import os
import resource
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bench.errors import BenchInputError

if TYPE_CHECKING:

    pass


GiB = 2**30


def gib(v: Any, unit: str = " GiB") -> str:
    """A byte count as GiB with two decimals, for tables and summaries ("n/a" where it is not a number)."""
    try:
        return f"{float(v) / GiB:.2f}{unit}"
    except (TypeError, ValueError):
        return "n/a"


# ---- what may be used -------------------------------------------------------------------------
def _proc_kib(path: str, field: str) -> int | None:
    """A `Field:  N kB` line of a /proc file, in KiB (None where there is no such file or field)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, if it has one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def host_available() -> int | None:
    """RAM a new allocation can get without swapping: MemAvailable, within the cgroup's limit."""
    kib = _proc_kib("/proc/meminfo", "MemAvailable")
    values = [v for v in (kib * 1024 if kib is not None else None, _cgroup_room()) if v is not None]
    return min(values) if values else None


# ---- where the replicas ran --------------------------------------------------------------------
def cores_per_replica(replicas_here: int, local_processes: int) -> float:
    """The CPU cores each replica of this process had: the cores it may use (its affinity) over its
    `replicas_here`, or the machine's cores over every replica on this host (`local_processes`
    such processes), whichever is fewer. Unpinned processes share the affinity they all have; a
    process pinned to its own cores (mpirun's binding, an emulated host) has those alone."""
    mine = len(os.sched_getaffinity(0)) / max(1, replicas_here)
    host = (os.cpu_count() or 1) / max(1, replicas_here * local_processes)
    return min(mine, host)


# ---- what crossed the network ---------------------------------------------------------------------
def net_bytes() -> tuple[int, int] | None:
    """Bytes sent and received so far on this process's network namespace's interfaces other than
    loopback (/proc/self/net/dev): every process's traffic on the host, not only this one's;
    None where the file cannot be read."""
    tx = rx = 0
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
        for line in lines:
            name, fields = line.split(":", 1)
            if name.strip() == "lo":
                continue
            values = fields.split()
            rx += int(values[0])
            tx += int(values[8])
    except (OSError, ValueError, IndexError):
        return None
    return tx, rx


class NetCounter:
    """The host's interface bytes between `start` and `stop` (the timed steps): `sent`, `received`."""

    def __init__(self) -> None:
        self._start: tuple[int, int] | None = None
        self.sent: int | None = None
        self.received: int | None = None

    def start(self) -> None:
        self._start = net_bytes()

    def stop(self) -> None:
        end = net_bytes()
        if self._start is not None and end is not None:
            self.sent, self.received = end[0] - self._start[0], end[1] - self._start[1]


# ---- the guard: stop before the kernel's OOM killer does -----------------------------------------
FLOOR_ENV = "CNNBENCH_MEMORY_FLOOR_BYTES"
FLOOR_SHARE, FLOOR_MIN = 0.05, 512 * 2**20
GUARD_INTERVAL_S = 0.15  # the kernel needs seconds to reclaim caches before it kills: a poll well inside that


def memory_floor() -> int:
    """The available RAM below which the guard stops a run: max(5% of RAM, 512 MiB), or the
    bytes in CNNBENCH_MEMORY_FLOOR_BYTES (BenchInputError if that is not a whole number >= 0)."""
    raw = os.environ.get(FLOOR_ENV)
    if raw is not None:
        try:
            value = int(raw.strip())
        except ValueError:
            value = -1
        if value < 0:
            raise BenchInputError(f"{FLOOR_ENV} must be a whole number of bytes >= 0. Received: {FLOOR_ENV}={raw!r}")
        return value
    kib = _proc_kib("/proc/meminfo", "MemTotal")
    return max(int(FLOOR_SHARE * kib * 1024) if kib else 0, FLOOR_MIN)


class MemoryGuard:
    """A watcher thread: every GUARD_INTERVAL_S it reads the host's available memory, and the
    first time it is below `floor` calls `breach(message)` (which ends the process). `stop`
    ends the watch; once it returns, `breach` has not run and will not."""

    def __init__(self, floor: int, breach: Callable[[str], None], interval: float = GUARD_INTERVAL_S):
        self.floor, self._breach, self._interval = floor, breach, interval
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="cnnbench-memory-guard", daemon=True)

    def start(self) -> "MemoryGuard":
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:  # waits for a breach in progress, which never returns
            self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)  # not left running into the interpreter's shutdown

    def _watch(self) -> None:
        while not self._stopped.is_set():
            available = host_available()
            if available is not None and available < self.floor:
                with self._lock:
                    if self._stopped.is_set():
                        return
                    self._breach(f"available memory {available / GiB:.3f} GiB fell below the memory guard's floor "
                                 f"{self.floor / GiB:.3f} GiB (process RSS {rss_bytes() / GiB:.2f} GiB, peak "
                                 f"{process_peak_bytes() / GiB:.2f} GiB); stopped before the kernel's OOM killer")
                    return
            self._stopped.wait(self._interval)


# ---- what was used --------------------------------------------------------------------------------
def rss_bytes() -> int:
    kib = _proc_kib("/proc/self/status", "VmRSS")
    return kib * 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Peak:
    """A peak-memory probe: `reset` after warmup, `peak` after the timed steps. Where it cannot
    reset, the peak covers the run since start-up, and `label` says so."""

    source = ""
    since_start = False

    @property
    def label(self) -> str:
        return self.source + ("_since_start" if self.since_start else "")


def _hwm_bytes() -> int:
    """The kernel's high-water mark of this process's RSS (VmHWM) since start or its last reset."""
    kib = _proc_kib("/proc/self/status", "VmHWM")
    return kib * 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# VmHWM as it stood before each reset of it (HostPeak.reset). Writing 5 to clear_refs lowers
# VmHWM to the current RSS, and ru_maxrss with it (the kernel's getrusage reads the same mark,
# plus only what exited threads left behind), so neither alone still gives the process's peak
# after a reset; the largest of the marks before each reset and the mark now does.
_hwm_before_reset = 0


def process_peak_bytes() -> int:
    """The process's peak RSS since it started, the figure the kernel's OOM killer weighs
    (a reset of the timed steps' peak included)."""
    return max(_hwm_before_reset, _hwm_bytes())


class HostPeak(Peak):
    """The process's peak RSS over the timed part, above its RSS before the model was built.
    Linux resets the high-water mark (VmHWM) on writing 5 to /proc/self/clear_refs."""

    source = "cpu_rss"

    def __init__(self) -> None:
        self.baseline = rss_bytes()

    def reset(self) -> None:
        global _hwm_before_reset
        _hwm_before_reset = process_peak_bytes()
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:  # no reset here: the peak then covers the whole run
            self.since_start = True

    def peak(self) -> int:
        return max(0, _hwm_bytes() - self.baseline)


class DevicePeak(Peak):
    """A framework's own peak counter over the local devices (`read` gives each device's peak,
    `reset` restarts them where the framework can, and says whether it did)."""

    def __init__(self, source: str, read: Callable[[], list[int]], reset: Callable[[], bool]):
        self.source, self._read, self._reset = source, read, reset

    def reset(self) -> None:
        self.since_start = not self._reset()

    def peak(self) -> int:
        return max(self._read(), default=0)
