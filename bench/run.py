"""`python bench/run.py MODEL [options]`: one benchmark run, one CSV row (see --help)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    # Run as a script: put the repo root, not bench/, first on the path (bench/ holds modules
    # named data, config, ... that must not shadow other packages).
    sys.path[0] = str(Path(__file__).resolve().parents[1])

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging  # noqa: E402 - the imports below come after the path and the log level are set

import models  # noqa: E402
from bench.backends import load, select  # noqa: E402
from bench.config.parse import parse_args  # noqa: E402
from bench.errors import (  # noqa: E402
    BenchInputError,
    ExitCode,
    PredictedOOM,
    input_error,
    interrupted,
    one_line,
)
from bench.results.mllog import append_log, check_mllog  # noqa: E402
from bench.results.store import OutputRefused, append_row, check_output  # noqa: E402
from bench.runner.execute import execute  # noqa: E402
from bench.runner.summary import summary_text  # noqa: E402
from bench.runner.validate import prepare  # noqa: E402
from bench.sweep.repeats import check_not_launched, run_repeats  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse, run, append the row (chief only), print a summary; with --repeats N, start N fresh
    runs of it one after another (bench.sweep.repeats) and print their spread. Bad input, or a memory estimate
    beyond the memory available (unless --on-predicted-oom row, as a sweep's child asks): one
    line, exit 2; Ctrl-C: one line, exit 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return interrupted("interrupted: no row written")


def _main(argv: list[str] | None) -> int:
    try:
        cfg = prepare(parse_args(argv))  # checked and resolved once: everything below takes this one
        select(cfg.backend)  # before anything imports keras
        if cfg.summary:
            load(cfg.backend)  # the framework imported as a run imports it: quietly, without what it needs not
            print(models.describe(cfg.model, num_classes=cfg.num_classes, width=cfg.width,
                                  input_shape=(cfg.image_size, cfg.image_size, 3)).table())
            return ExitCode.OK
        check_output(cfg.output)  # refuse a device, a foreign file, ... before anything trains
        if cfg.mllog is not None:
            check_mllog(cfg.mllog)
        if cfg.repeats > 1 and cfg.repeat_index is None:  # the parent of N fresh runs, not one of them
            check_not_launched(cfg)
            return run_repeats(cfg)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("cnnbench").setLevel(logging.INFO)  # ours; the frameworks' INFO chatter stays off
        outcome = execute(cfg)
    except (BenchInputError, PredictedOOM) as e:
        return input_error(e)
    if outcome.is_chief:
        failed = _write(lambda: append_row(cfg.output, outcome.row), "the result row", cfg.output, "no row written")
        if failed is not None:
            return failed
        print(summary_text(outcome.row, cfg.output))
        if outcome.mllog:
            failed = _write(lambda: append_log(cfg.mllog, outcome.mllog), "the MLLOG lines", cfg.mllog,
                            "the row is written; no MLLOG lines written")
            if failed is not None:
                return failed
    return outcome.exit_code


def _write(write: Callable[[], None], what: str, path: str, refused: str) -> int | None:
    """Write one of the run's outputs (`write`): None once written, else the exit code, with one line."""
    try:
        write()
    except OutputRefused as e:  # the file became one that is not ours to grow while the run ran
        return input_error(BenchInputError(f"{refused}: {e}"))
    except OSError as e:
        print(f"error: could not write {what} to {path}: {one_line(e)}", file=sys.stderr)
        return ExitCode.FAILED
    return None


if __name__ == "__main__":
    sys.exit(main())
