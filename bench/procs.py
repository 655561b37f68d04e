"""Child processes: stopping a process group, saying in words how a child ended, turning
SIGTERM and SIGHUP into the same orderly stop as Ctrl-C in a process that has children, and
asking nvidia-smi what GPUs this machine has (without importing a framework: for the strategy
checks, sweeps and start-up failures)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


def _signal_words(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL:
        return f"killed by {name} (out of memory?)"
    if signum in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT):
        return f"crashed with {name}"
    return f"killed by {name}"


def describe_exit(returncode: int) -> str:
    """How a child ended, in words: 'exit code 3', 'killed by SIGKILL (out of memory?)',
    'crashed with SIGSEGV'. Shells and launchers report a signal as 128 + its number."""
    if returncode < 0:
        return _signal_words(-returncode)
    if 128 < returncode < 128 + 65 and returncode - 128 in {int(s) for s in signal.Signals}:
        return f"exit code {returncode} ({_signal_words(returncode - 128)})"
    return f"exit code {returncode}"


def killed_for_memory(returncode: int) -> bool:
    return returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


def stop_pids(pids: list[int], grace: float = 5.0, kill_wait: float = 2.0) -> list[int]:
    """Stop processes that are not our children (a daemon, what runs in a network namespace):
    SIGTERM, up to `grace` seconds for them to end, then SIGKILL and up to `kill_wait` more.
    Returns those still alive after that."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end and any(alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if alive(p)]
        if not pids:
            break
    return pids


def stop_groups(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """Stop children started with start_new_session=True and everything they started: SIGTERM to
    each process group, then SIGKILL to those still running `grace` seconds later. A group may
    already be gone. A stop signal arriving meanwhile (see `stop_on_signals`) is passed on only
    once they are all stopped."""
    try:
        _stop_groups(procs, grace)
    except KeyboardInterrupt:  # repeats are ignored now: this second pass cannot be cut short
        _stop_groups(procs, grace)
        raise


def _stop_groups(procs: list[subprocess.Popen], grace: float) -> None:
    running = [p for p in procs if p.poll() is None]
    for p in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in running:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised as Ctrl-C is, so every `except KeyboardInterrupt`
    path (stop the children, keep the finished rows) serves all three."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report it: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + getattr(stop, "signum", signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals():
    """Within: SIGINT, SIGTERM and SIGHUP raise `Stopped` in the main thread. Only the first does:
    a repeat while the children are being stopped is ignored, so that a second Ctrl-C (or a
    supervisor's second SIGTERM) cannot cut the stopping short and orphan them. Main thread only."""
    first: list[int] = []

    def handler(signum, frame):
        if first:
            return
        first.append(signum)
        raise Stopped(signum)

    # a signal ignored when we started stays ignored (nohup's SIGHUP, a background job's SIGINT)
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def gpu_count() -> int:
    """NVIDIA GPUs on this machine, as `nvidia-smi -L` lists them (0 without the tool)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def cuda_visible(listed: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES's entries as CUDA reads them, for a machine with `listed` GPUs:
    indices or UUIDs (GPU-..., MIG-...), up to the first invalid entry ("" or "-1" hides every
    GPU); None where the variable is unset (every GPU visible)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    entries = []
    for entry in (e.strip() for e in visible.split(",")):
        if not (entry.startswith(("GPU-", "MIG-")) or (entry.isdigit() and int(entry) < listed)):
            break
        entries.append(entry)
    return entries


def visible_gpus() -> int:
    """The GPUs a framework started in this process would see: nvidia-smi's, narrowed by
    CUDA_VISIBLE_DEVICES (`cuda_visible`)."""
    n = gpu_count()
    entries = cuda_visible(n)
    return n if n == 0 or entries is None else min(len(entries), n)


def has_gpu(backend: str) -> bool:
    """Whether `backend` will run on a GPU here, learned without importing it: a visible GPU,
    and for JAX no JAX_PLATFORMS that leaves the GPU out."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if backend == "jax" and platforms and not {"cuda", "gpu", "rocm"} & {p.strip() for p in platforms.split(",")}:
        return False
    return visible_gpus() > 0


def gpu_total_bytes() -> int | None:
    """The smallest memory size of the GPUs nvidia-smi lists (None without the tool)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        sizes = [int(x) * 2**20 for x in out.split() if x.strip().isdigit()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return min(sizes) if sizes else None
