"""The bottom of the house: how a run can end (`Status`, its row's text), how a process ends
(`ExitCode`), the exceptions that decide between them, and every error put on one line."""
from __future__ import annotations

import enum
import re
import sys


class Status(str, enum.Enum):
    """How a run ended, as its row's `status` cell says it. A str (what StrEnum is from Python
    3.11), so the CSV, pandas and a comparison with plain text all see the same word."""
    OK = "ok"
    DIVERGED = "diverged"            # the loss went non-finite
    FAILED = "failed"                # anything else after start-up (a crash, a failed start)
    OOM = "oom"                      # out of memory: the framework's error, the kernel's kill or our guard
    OOM_PREDICTED = "oom_predicted"  # the memory estimate exceeded what was available: nothing ran
    TIMEOUT = "timeout"              # a sweep's child ran past its timeout

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class ExitCode(enum.IntEnum):
    """How a process ends. A stop signal's is 128 + its number (bench.procs.exit_code)."""
    OK = 0
    FAILED = 1          # the run's row says why (or it could not be written)
    INPUT = 2           # refused: bad input or a predicted out-of-memory; one line, no row
    INTERRUPTED = 130   # 128 + SIGINT, as shells report it


class BenchInputError(ValueError):
    """Bad user input (argument, data path, data contents). The CLI prints it on one line, exit 2."""


class PredictedOOM(Exception):
    """The memory estimate exceeds the memory available, so nothing ran. Not bad input: the
    caller says what it means by --on-predicted-oom (bench/run.py refuses on one line, exit 2;
    a sweep's child keeps a row with status oom_predicted)."""


def input_error(e: BaseException) -> int:
    """Print a refusal (bad input, a predicted out-of-memory) on one line to stderr; return exit code 2."""
    print(f"error: {one_line(e)}", file=sys.stderr)
    return ExitCode.INPUT


def interrupted(what: str = "interrupted") -> int:
    """Ctrl-C: one line, exit 130, no traceback."""
    print(f"{what} (Ctrl-C)", file=sys.stderr)
    return ExitCode.INTERRUPTED


# ---- an error on one line ---------------------------------------------------------------------
def one_line(message: object) -> str:
    """A message on one line: wrapped causes (tarfile, pickle, pandas) may span several."""
    return " ".join(str(message).split())


# Start-up chatter of TensorFlow, absl, CUDA and the launchers that says nothing about a failure.
START_UP_NOISE = [re.compile(p) for p in (
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
# Lines of an exception's message that say where it happened, not what: TensorFlow wraps the
# cause in a graph traceback. (A child's output keeps its traceback's File lines: with the
# error after them they say where.)
WRAPPER_LINES = ("Graph execution error", "Detected at node", "File ", "[[{{node", "^")
ERROR_CHARS = 500  # the most of an exception a row's error cell keeps


def meaningful_lines(text: str) -> list[str]:
    """The lines of a child's output that can explain a failure: start-up noise dropped,
    launcher prefixes kept (they say which rank spoke)."""
    out = []
    for line in text.splitlines():
        body = _LAUNCHER_PREFIX.sub("", line.strip()).strip()
        if body and not any(p.search(body) for p in START_UP_NOISE):
            out.append(line.strip())
    return out


def tail(text: str, n: int = 6, limit: int = 1500) -> str:
    """A child's output on one line: its last n meaningful lines, joined with ' | ', at most
    `limit` characters."""
    return " | ".join(meaningful_lines(text)[-n:])[-limit:]


def error_line(e: BaseException) -> str:
    """An exception on one line for a row's error cell: its type and its most telling line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(WRAPPER_LINES)]
    return f"{type(e).__name__}: {(useful or lines or [''])[0]}"[:ERROR_CHARS]
