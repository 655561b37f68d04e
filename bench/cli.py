"""`cnnbench SUBCOMMAND ...`: one console entry point for the suite's tools."""
from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.errors import BenchInputError, ExitCode, input_error

# Each tool's module (its `main(argv)`); pyproject.toml's console scripts are `cnnbench-NAME` for
# each NAME here (tests/test_setup.py holds the two lists equal).
COMMANDS = {"run": "bench.run", "sweep": "bench.sweep.cli", "report": "bench.report.cli",
            "traces": "bench.measure.traces", "cluster": "launch.local_cluster", "models": "models.__main__",
            "peer": "bench.lab.peer", "gpu-check": "bench.lab.gpu_check", "overhead": "bench.lab.overhead",
            "bn-compare": "bench.lab.bn_compare", "predict": "bench.predict.cli",
            "imagenet-like": "bench.data.imagenet_like"}
USAGE = f"usage: cnnbench {{{','.join(COMMANDS)}}} ..."


def main(argv: list[str] | None = None) -> int:
    """Bad input (no command, an unknown one): one line, exit 2; the command's own errors are its own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return ExitCode.OK
    if not argv or argv[0] not in COMMANDS:
        got = f"Received: {argv[0]!r}" if argv else "Received: nothing"
        return input_error(BenchInputError(f"give a command, one of {', '.join(COMMANDS)} ({USAGE}). {got}"))
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
