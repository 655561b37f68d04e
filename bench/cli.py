"""`cnnbench SUBCOMMAND ...`: one console entry point for the suite's tools."""
from __future__ import annotations

import sys

COMMANDS = {"run": "bench.run", "sweep": "bench.sweep", "report": "bench.report"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        bad = f"error: unknown command {argv[0]!r}\n" if argv and argv[0] not in ("-h", "--help") else ""
        print(f"{bad}usage: cnnbench {{{','.join(COMMANDS)}}} ...", file=sys.stderr if bad else sys.stdout)
        return 2 if bad or not argv else 0
    import importlib
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
