"""Child processes: stopping a process group, saying in words how a child ended, and turning
SIGTERM and SIGHUP into the same orderly stop as Ctrl-C in a process that has children."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time

# Start-up chatter of TensorFlow, absl, CUDA and the launchers that says nothing about a failure.
_NOISE = [re.compile(p) for p in (
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] ",        # TensorFlow's C++ INFO/WARNING lines
    r"^[IW]\d{4} \d\d:\d\d:\d\d",                          # absl INFO/WARNING lines
    r"WARNING: All log messages before absl::InitializeLog",
    r"oneDNN custom operations are on",
    r"rebuild TensorFlow with the appropriate compiler flags",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"Could not find cuda drivers|TF-TRT Warning|cuda_dispatcher",
    r"computation placer already registered",
    # matplotlib (imported by Keras) under a HOME it cannot write: it works on from a temporary folder
    r"mkdir -p failed for path .*matplotlib",
    r"Matplotlib created a temporary (cache|config) directory",
    r"^\$ ",                                               # the sweep's own command line in the log
)]
_LAUNCHER_PREFIX = re.compile(r"^(\[\d+(,\d+)?\]<(stdout|stderr)>:|\[worker \d+\] )")


def meaningful_lines(text: str) -> list[str]:
    """The lines of a child's output that can explain a failure: start-up noise dropped,
    launcher prefixes kept (they say which rank spoke)."""
    out = []
    for line in text.splitlines():
        body = _LAUNCHER_PREFIX.sub("", line.strip()).strip()
        if body and not any(p.search(body) for p in _NOISE):
            out.append(line.strip())
    return out


def tail(text: str, n: int = 6, limit: int = 1500) -> str:
    """The last n meaningful lines, joined with ' | ', at most `limit` characters."""
    return " | ".join(meaningful_lines(text)[-n:])[-limit:]


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
