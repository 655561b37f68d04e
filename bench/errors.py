"""The one exception type that means "the user's input is wrong": exit 2, one line, no row."""
from __future__ import annotations

import sys

EXIT_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class BenchInputError(ValueError):
    """Bad user input (argument, data path, data contents). The CLI prints it on one line, exit 2."""


def one_line(message: object) -> str:
    """A message on one line: wrapped causes (tarfile, pickle, pandas) may span several."""
    return " ".join(str(message).split())


def input_error(e: BaseException) -> int:
    """Print a bad-input error on one line to stderr; return exit code 2."""
    print(f"error: {one_line(e)}", file=sys.stderr)
    return EXIT_INPUT


def interrupted(what: str = "interrupted") -> int:
    """Ctrl-C: one line, exit 130, no traceback."""
    print(f"{what} (Ctrl-C)", file=sys.stderr)
    return EXIT_INTERRUPTED
