"""Energy over exactly the timed steps: a power source chosen once per run (NVML, nvidia-smi's
query loop, the CPU packages' RAPL counters, or none), sampled by a thread from before the timed
window opens until after it closes, and integrated over the window alone; then, across ranks,
one figure for the whole job (`combine`) and the row's columns (`energy_columns`).

What a source covers: NVML and nvidia-smi the boards of the GPUs this process can see (nvidia-smi's
list narrowed by CUDA_VISIBLE_DEVICES; idle power included), only for a run whose framework uses
a GPU; RAPL the CPU packages of this host, only for a run on CPUs. Each process measures its own
host's devices; `combine` counts a device that several processes on one host saw once, and sums
over hosts. Nothing is estimated: where no source answers, or the window held too few samples,
the numbers stay empty."""
from __future__ import annotations

import abc
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.procs import cuda_visible

# energy_source's values; a value's index is its code in the gather across ranks
SOURCES = ("none", "nvml", "nvidia-smi", "rapl")
NONE = "none"
# at least this many samples of every device inside the window, or the row keeps no number: with
# fewer, the window's energy would come from samples taken outside it
MIN_SAMPLES = 2
# devices per host a gathered reading has room for (GPU indices, CPU packages)
MAX_CHANNELS = 32
RAPL_ROOT = "/sys/class/powercap"
RAPL_DIR_ENV = "CNNBENCH_RAPL_DIR"  # read RAPL zones from this folder instead (tests: a fake tree)
# tests only: try the GPU sources even when the run's framework sees no GPU (a fake nvidia-smi
# drives a CPU run); the row's device_kind still says what the run ran on
ANY_DEVICE_ENV = "CNNBENCH_ENERGY_ANY_DEVICE"
_SMI_QUERY = "--query-gpu=index,power.draw"
_SMI_FORMAT = "--format=csv,noheader,nounits"


# ---- the maths: power samples and energy counters over a window --------------------------------
def integrate_power(times: Any, watts: Any, t0: float, t1: float) -> float:
    """Joules from t0 to t1 of a power series sampled at `times` (seconds, increasing): trapezoids
    between samples, the series cut at the window's edges by linear interpolation, and held at
    its first (last) value before (after) it."""
    t, p = np.asarray(times, dtype=float), np.asarray(watts, dtype=float)
    if t.size == 0 or t1 <= t0:
        return 0.0
    grid = np.concatenate([[t0], t[(t > t0) & (t < t1)], [t1]])
    return float(np.trapezoid(np.interp(grid, t, p), grid))


def unwrap(counter: Any, max_range: float) -> np.ndarray:
    """A cumulative counter that wraps to 0 past `max_range` (RAPL's energy_uj and
    max_energy_range_uj) as a monotone series from its first reading: a reading below the one
    before it wrapped once in between (the reader polls well within one wrap)."""
    c = np.asarray(counter, dtype=float)
    if c.size == 0:
        return c
    step = np.diff(c)
    step[step < 0] += max_range
    return np.concatenate([[0.0], np.cumsum(step)])


def counter_energy(times: Any, cumulative: Any, t0: float, t1: float) -> float:
    """The rise of a cumulative (unwrapped) energy series from t0 to t1, interpolated linearly
    between readings at the window's edges."""
    t, c = np.asarray(times, dtype=float), np.asarray(cumulative, dtype=float)
    if t.size == 0 or t1 <= t0:
        return 0.0
    return float(np.interp(t1, t, c) - np.interp(t0, t, c))


def inside(times: Any, t0: float, t1: float) -> int:
    t = np.asarray(times, dtype=float)
    return int(((t >= t0) & (t <= t1)).sum())


# ---- the sources -------------------------------------------------------------------------------
class PowerSource(abc.ABC):
    """A sampler of one kind of device: `start` before the window, `energy(t0, t1)` once a sample
    past t1 is in (`latest`), `close` at the end. Times are time.monotonic()'s. Each device
    (`channel`: a GPU's index, a CPU package's) has its own series of power in watts or, where
    `cumulative`, of energy in joules since the first reading."""

    name = NONE
    cumulative = False

    def __init__(self, channels: list[int], interval_s: float):
        self.channels, self.interval_s = list(channels), interval_s
        self._series: dict[int, list[tuple[float, float]]] = {c: [] for c in self.channels}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cnnbench-energy-{self.name}", daemon=True)

    def start(self) -> "PowerSource":
        self._thread.start()
        return self

    @abc.abstractmethod
    def _run(self) -> None:
        """The sampler thread: `_add` samples until `_stopped` is set (or its input ends)."""

    def _add(self, channel: int, t: float, value: float) -> None:
        if channel in self._series:
            with self._lock:
                self._series[channel].append((t, value))

    def latest(self) -> float:
        """The time of the newest sample that every device has reached (-inf before any)."""
        with self._lock:
            return min((s[-1][0] if s else -np.inf for s in self._series.values()), default=-np.inf)

    def covers(self, t0: float, t1: float) -> bool:
        """Whether every device has a sample at or before t0 and one at or after t1: otherwise the
        window's edge would be extrapolated (a source that started late or died)."""
        with self._lock:
            return all(s and s[0][0] <= t0 and s[-1][0] >= t1 for s in self._series.values())

    def energy(self, t0: float, t1: float) -> dict[int, tuple[float, int]]:
        """Each device's joules over [t0, t1] and its samples inside that window."""
        with self._lock:
            series = {c: np.asarray(s, dtype=float).reshape(-1, 2) for c, s in self._series.items()}
        joules = counter_energy if self.cumulative else integrate_power
        return {c: (joules(s[:, 0], s[:, 1], t0, t1), inside(s[:, 0], t0, t1)) for c, s in series.items()}

    def close(self) -> None:
        self._stopped.set()
        self._end()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _end(self) -> None:
        """What the thread needs to end besides `_stopped` (a child process to stop)."""


class _Polled(PowerSource):
    """A source read by calling `_poll` every interval."""

    def _run(self) -> None:
        while not self._stopped.is_set():
            t = time.monotonic()
            for channel, value in self._poll().items():
                self._add(channel, t, value)
            self._stopped.wait(self.interval_s)

    @abc.abstractmethod
    def _poll(self) -> dict[int, float]:
        ...


class NvmlSource(_Polled):
    """Board power through NVML (the `nvidia-ml-py` package's pynvml), read in milliwatts per GPU."""

    name = "nvml"

    def __init__(self, handles: dict[int, Any], interval_s: float):
        self._handles = handles
        super().__init__(sorted(handles), interval_s)

    def _poll(self) -> dict[int, float]:
        import pynvml

        out = {}
        for index, handle in self._handles.items():
            with contextlib.suppress(pynvml.NVMLError):
                out[index] = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        return out

    def close(self) -> None:
        import pynvml

        super().close()  # the thread has stopped polling: NVML can go
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


class NvidiaSmiSource(PowerSource):
    """Board power from `nvidia-smi --query-gpu=index,power.draw ... -lms N`, one child process
    printing a line per GPU every N ms; a sample's time is when its line arrives."""

    name = "nvidia-smi"

    _proc: subprocess.Popen | None = None

    def start(self) -> "PowerSource":
        every_ms = str(max(1, round(1000 * self.interval_s)))
        self._proc = subprocess.Popen(["nvidia-smi", _SMI_QUERY, _SMI_FORMAT, "-lms", every_ms],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        return super().start()

    def _run(self) -> None:
        for line in self._proc.stdout:
            t = time.monotonic()
            parsed = _smi_line(line)
            if parsed is not None:
                self._add(parsed[0], t, parsed[1])

    def _end(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._thread.join(timeout=5)
        self._proc.stdout.close()


class RaplSource(_Polled):
    """The CPU packages' cumulative energy counters (Linux powercap, intel-rapl:N/energy_uj in
    microjoules, wrapping at max_energy_range_uj), unwrapped as they are read."""

    name = "rapl"
    cumulative = True

    def __init__(self, zones: dict[int, Path], interval_s: float):
        self._zones = zones
        self._range = {c: float((z / "max_energy_range_uj").read_text()) for c, z in zones.items()}
        self._last: dict[int, float] = {}
        self._total: dict[int, float] = dict.fromkeys(zones, 0.0)
        super().__init__(sorted(zones), interval_s)

    def _poll(self) -> dict[int, float]:
        out = {}
        for c, zone in self._zones.items():
            try:
                raw = float((zone / "energy_uj").read_text())
            except (OSError, ValueError):
                continue
            if c in self._last:
                self._total[c] += float(unwrap([self._last[c], raw], self._range[c])[-1]) / 1e6
            self._last[c] = raw
            out[c] = self._total[c]
        return out


def _smi_line(line: str) -> tuple[int, float] | None:
    """(GPU index, watts) from one line of the power query; None for "[N/A]" and other words."""
    parts = [p.strip() for p in line.split(",")]
    try:
        return int(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        return None


def _gpu_channels(listed: list[int], uuid_index: Callable[[], dict[str, int]]) -> list[int] | None:
    """Which of the GPUs a tool listed (by index) this process can see, through
    CUDA_VISIBLE_DEVICES (bench.procs.cuda_visible); None where a MIG instance is named (its board's
    power is shared with every other instance on it: not this run's)."""
    entries = cuda_visible(max(listed, default=-1) + 1)
    if entries is None:
        return sorted(listed)
    if any(e.startswith("MIG-") for e in entries):
        return None
    uuids = uuid_index() if any(e.startswith("GPU-") for e in entries) else {}
    picked = [int(e) if e.isdigit() else uuids.get(e) for e in entries]
    return sorted({i for i in picked if i is not None and i in listed})


def _nvml(interval_s: float) -> NvmlSource | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        handles = {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)}

        def uuids() -> dict[str, int]:
            out = {}
            for i, h in handles.items():
                u = pynvml.nvmlDeviceGetUUID(h)
                out[u.decode() if isinstance(u, bytes) else u] = i
            return out
        channels = _gpu_channels(list(handles), uuids)
        if not channels:
            pynvml.nvmlShutdown()
            return None
        for i in channels:
            pynvml.nvmlDeviceGetPowerUsage(handles[i])  # a board without a power sensor raises here
        return NvmlSource({i: handles[i] for i in channels}, interval_s)
    except pynvml.NVMLError:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
        return None


def _smi(*fields: str) -> list[list[str]]:
    out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", _SMI_FORMAT],
                         capture_output=True, text=True, timeout=20).stdout
    return [[p.strip() for p in line.split(",")] for line in out.splitlines() if line.strip()]


def _nvidia_smi(interval_s: float) -> NvidiaSmiSource | None:
    """nvidia-smi where it answers the power query with a number for a GPU this process sees."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        readings = [_smi_line(",".join(fields)) for fields in _smi("index", "power.draw")]
        listed = [r[0] for r in readings if r is not None]
        channels = _gpu_channels(listed, lambda: {u: int(i) for i, u in _smi("index", "uuid")})
        if not channels:
            return None
        return NvidiaSmiSource(channels, interval_s)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _rapl(interval_s: float, root: str | None) -> RaplSource | None:
    """The CPU packages' zones (intel-rapl:N, not their subzones) whose counters this user can read."""
    base = Path(root or os.environ.get(RAPL_DIR_ENV) or RAPL_ROOT)
    zones = {}
    for zone in sorted(base.glob("intel-rapl:*")):
        index = zone.name.split(":", 1)[1]
        if not index.isdigit():
            continue
        try:
            float((zone / "energy_uj").read_text())
            float((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        zones[int(index)] = zone
    return RaplSource(zones, interval_s) if zones else None


def choose_source(uses_gpu: bool, interval_s: float, rapl_dir: str | None = None) -> PowerSource | None:
    """The run's power source, chosen once: on a GPU run NVML, else nvidia-smi; on a CPU run the
    RAPL counters; None where none answers. A GPU run never falls back to RAPL: the CPU packages
    are not what ran its steps. With ANY_DEVICE_ENV=1 (tests) the GPU sources are tried first on
    any run. Not started yet."""
    gpu = uses_gpu or os.environ.get(ANY_DEVICE_ENV) == "1"
    if gpu:
        source = _nvml(interval_s) or _nvidia_smi(interval_s)
        if source is not None or uses_gpu:
            return source
    return _rapl(interval_s, rapl_dir)


# ---- the window, and the job's figure ----------------------------------------------------------
@dataclass(frozen=True)
class EnergyReading:
    """One process's energy over the timed window: each device's joules (by GPU index or CPU
    package), the window's seconds, and the fewest samples any device had inside it."""
    source: str
    joules: dict[int, float]
    window_s: float
    samples: int


class EnergyMeter:
    """The timed window's energy on this process's devices: `open` starts the source's sampling
    (before the compile step, so that samples are flowing when the window opens), `start` and
    `stop` bracket the timed steps, `close` ends the sampling (always: a child process or a thread
    may be running). `reading` is None until stop, for a run without a source, and where the
    samples did not reach over the whole window."""

    def __init__(self, source: PowerSource | None):
        self.source = source
        self.reading: EnergyReading | None = None
        self._t0: float | None = None

    @property
    def name(self) -> str:
        return self.source.name if self.source is not None else NONE

    def open(self) -> "EnergyMeter":
        if self.source is not None:
            try:
                self.source.start()
            except Exception:  # noqa: BLE001 - a source that cannot start measures nothing
                self.source = None
        return self

    def start(self) -> None:
        self._t0 = time.monotonic()

    def stop(self) -> None:
        t1 = time.monotonic()
        if self.source is None or self._t0 is None:
            return
        # the window's last stretch needs a sample past its end (a few intervals at most)
        deadline = t1 + 5 * self.source.interval_s + 1.0
        while self.source.latest() < t1 and time.monotonic() < deadline:
            time.sleep(min(0.01, self.source.interval_s))
        if not self.source.covers(self._t0, t1):
            return
        per_device = self.source.energy(self._t0, t1)
        self.reading = EnergyReading(self.source.name, {c: j for c, (j, _) in per_device.items()}, t1 - self._t0,
                                     min((n for _, n in per_device.values()), default=0))

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def host_key() -> float:
    """This host, as a number a float32 holds exactly (the gather may carry float32)."""
    return float(zlib.crc32(socket.gethostname().encode()) & 0xFFFFFF)


GATHER_WIDTH = 4 + MAX_CHANNELS


def gather_values(reading: EnergyReading | None, host: float | None = None) -> list[float]:
    """A reading as fixed-width numbers for the gather across ranks: the source's code, the host,
    the window, the fewest samples, then joules by device (NaN where none)."""
    values = [0.0, host_key() if host is None else host, np.nan, 0.0] + [np.nan] * MAX_CHANNELS
    if reading is None or reading.source == NONE or any(c >= MAX_CHANNELS for c in reading.joules):
        return values
    values[:4] = [float(SOURCES.index(reading.source)), values[1], reading.window_s, float(reading.samples)]
    for c, j in reading.joules.items():
        values[4 + c] = j
    return values


@dataclass(frozen=True)
class JobEnergy:
    """The whole job's energy over the timed window: every device counted once, summed over hosts."""
    source: str
    joules: float
    watts: float
    samples: int


def combine(per_rank: Any) -> JobEnergy:
    """Every rank's `gather_values`, as rows: one figure for the job. Ranks on one host that saw
    the same device count it once (its mean over them); hosts add up. Unless every rank had the
    same source, the job has none (a host without one would leave its devices out)."""
    rows = np.asarray(per_rank, dtype=float).reshape(-1, GATHER_WIDTH)
    codes = set(rows[:, 0].astype(int).tolist())
    if len(codes) != 1 or codes == {0}:
        return JobEnergy(NONE, np.nan, np.nan, 0)
    joules = watts = 0.0
    for host in np.unique(rows[:, 1]):
        mine = rows[rows[:, 1] == host]
        per_device = mine[:, 4:]
        measured = ~np.isnan(per_device).all(axis=0)
        joules += float(np.nanmean(per_device[:, measured], axis=0).sum())
        watts += float(np.nanmean(per_device[:, measured] / mine[:, 2:3], axis=0).sum())
    return JobEnergy(SOURCES[codes.pop()], joules, watts, int(rows[:, 3].min()))


def energy_columns(job: JobEnergy, steps: int, global_batch: int) -> dict[str, Any]:
    """The row's energy columns for `steps` steps of `global_batch` images in the window: the
    source always; the numbers only with MIN_SAMPLES or more samples of every device in it."""
    out: dict[str, Any] = {"energy_source": job.source}
    if job.source == NONE:
        return out
    out["energy_samples"] = job.samples
    if job.samples >= MIN_SAMPLES and steps > 0 and job.joules > 0:
        out.update(power_mean_w=job.watts, energy_per_step_j=job.joules / steps,
                   images_per_joule=global_batch * steps / job.joules)
    return out
