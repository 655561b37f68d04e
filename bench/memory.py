"""Memory: a step's footprint estimated from the model's layer walk before anything is built,
the memory a run may use, and the peak it really used.

Units: per device on a GPU, per process on a CPU (a CPU process holds all its replicas).
"""
from __future__ import annotations

import contextlib
import math
import os
import resource
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .config import _missing
from .errors import BenchInputError

if TYPE_CHECKING:
    from models.describe import ModelDescription

    from .config import RunConfig

GiB = 2**30
VARIABLE_BYTES = 4  # Keras keeps variables in float32 under every dtype policy
COMPUTE_BYTES = {"fp32": 4, "mixed_bf16": 2, "mixed_fp16": 2}
INPUT_BYTES = 4     # the batch reaches the model as float32
# Optimizer slots per trainable weight: Adam's two moments; SGD's momentum buffer (none without momentum)
SLOTS = {"adam": 2, "sgd": 1}
# Inference keeps no activations for a backward pass: at the widest point the input and output
# of a layer, and a residual shortcut, are alive at once.
INFERENCE_LIVE_OUTPUTS = 3
# What the framework allocates for itself once steps run (compiled programs, kernels, scratch
# and per-thread buffers), per process or device, calibrated on this project's 2-core CPU VM:
# beyond the weights and activations, TensorFlow's RSS grew by 79-95 MiB (full-width vgg13 and
# resnet18, batch 8-16), JAX's by 290-400 MiB to train and 150-220 MiB for inference (width
# 0.125 to 1). Not calibrated on a GPU.
RUNTIME_BYTES = {("tensorflow", "train"): 80 * 2**20, ("tensorflow", "inference"): 80 * 2**20,
                 ("jax", "train"): 400 * 2**20, ("jax", "inference"): 200 * 2**20}


class PredictedOOM(BenchInputError):
    """The estimate exceeds the memory available (bench/run.py: exit 2; in a sweep: a row with
    status oom_predicted)."""


@dataclass(frozen=True)
class Estimate:
    """A training (or inference) step's memory, from parameters, optimizer state and activations."""
    state_bytes: int              # one replica's weights, gradients and optimizer slots
    per_image_bytes: int          # activations alive per image (kept for backward in training)
    batch: int                    # per-replica batch
    replicas: int                 # replicas that share this memory (one per device on a GPU)
    runtime_bytes: int = 0        # the framework's own, once per process or device

    @property
    def total_bytes(self) -> int:
        return self.runtime_bytes + self.replicas * (self.state_bytes + self.batch * self.per_image_bytes)


def estimate(desc: "ModelDescription", cfg: "RunConfig", replicas: int = 1) -> Estimate:
    """The estimate for `cfg` (resolved) from the layer walk of describe(). Training keeps every
    layer's output for the backward pass and holds gradients and optimizer slots; inference
    holds the weights and the few largest activations alive at once."""
    weights = desc.params * VARIABLE_BYTES
    act = COMPUTE_BYTES[cfg.precision]
    outputs = [_numel(layer.output_shape) for layer in desc.layers]
    image = _numel(desc.input_shape) * INPUT_BYTES
    if cfg.mode == "inference":
        state = weights + (desc.params * act if act != VARIABLE_BYTES else 0)  # the cast copy under mixed policies
        per_image = image + INFERENCE_LIVE_OUTPUTS * max(outputs, default=0) * act
    else:
        trainable = desc.trainable_params
        slots = SLOTS[cfg.optimizer] if cfg.optimizer != "sgd" or cfg.momentum else 0
        state = weights + trainable * VARIABLE_BYTES * (1 + slots) + (desc.params * act if act != VARIABLE_BYTES else 0)
        per_image = image + sum(outputs) * act
    est = Estimate(int(state), int(per_image), int(cfg.batch_size), int(replicas), RUNTIME_BYTES[cfg.backend, cfg.mode])
    if not (math.isfinite(est.total_bytes) and est.total_bytes > 0):
        raise AssertionError(f"memory estimate is not a positive finite number: {est}")  # a bug, never input
    return est


def _numel(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


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


def check(est: Estimate, available: int | None, *, processes: int = 1, where: str = "available RAM",
          floor: int = 0) -> None:
    """PredictedOOM, one line with both numbers, if `processes` such footprints do not fit in
    `available` less the memory guard's `floor` (a run that reaches the floor is stopped)."""
    if available is None:
        return
    need = est.total_bytes * processes
    if need > available - floor:
        share = f" ({processes} processes on this host)" if processes > 1 else ""
        less = f" less the memory guard's floor {floor / GiB:.2f} GiB" if floor else ""
        raise PredictedOOM(f"estimated memory {need / GiB:.2f} GiB{share} exceeds {where} {available / GiB:.2f} GiB"
                           f"{less} (batch {est.batch} x {est.replicas} replica(s); --force runs it anyway)")


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

    def _watch(self) -> None:
        while not self._stopped.is_set():
            available = host_available()
            if available is not None and available < self.floor:
                with self._lock:
                    if self._stopped.is_set():
                        return
                    self._breach(f"available memory {available / GiB:.2f} GiB fell below the memory guard's floor "
                                 f"{self.floor / GiB:.2f} GiB (process RSS {rss_bytes() / GiB:.2f} GiB, peak "
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


# ---- whether a probe fits ---------------------------------------------------------------------------
NO_FIT_STATUSES = ("oom", "oom_predicted")


def fits(row: Mapping[str, Any], cap_gb: float | None) -> bool | None:
    """Whether a run fits: ok, and with its measured peak within the memory cap if there is
    one. None: it failed for another reason (which says nothing about memory)."""
    status = row.get("status")
    if status in NO_FIT_STATUSES:
        return False
    if status != "ok":
        return None
    cap = cap_gb
    peak = row.get("peak_mem_bytes")
    if cap is None or _missing(cap):
        return True
    if peak is None or _missing(peak):
        return None
    return float(peak) <= float(cap) * GiB



