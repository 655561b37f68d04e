"""Turn result CSVs into tables, plots and comparisons.

    python -m bench.report results/runs.csv [more.csv ...] [--out results/report] [--format md,html]
    python -m bench.report --compare OLD.csv NEW.csv [--fail-on-regression [--threshold 0.05]]

--out is a folder that may hold other files: the report writes report.md, report.html, its
plots and a manifest (.cnnbench-report) of the files it wrote, and overwrites or deletes only
files that manifest lists. A file of one of its names that it did not write is refused (exit 2,
naming the file); nothing is written then. Files are UTF-8 whatever the locale, and written all
at once: a full disk leaves the folder as it was (exit 1).

In notebooks: `from bench.report.cli import load_results` -> a typed pandas DataFrame.

When several ok rows share a configuration, tables use the most recent one; when it is one of a
--repeats group with 3 or more ok runs, the median of those runs with a between-run 95% CI.
--compare and the findings that compare two configurations test each difference, across the runs
of a configuration's repeat group where it has one (docs/reports.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config.parse import OneLineParser
from bench.errors import BenchInputError, ExitCode, input_error, one_line
from bench.measure.stats import ACROSS_STEPS, ALPHA, FASTER, NO_DIFFERENCE, SLOWER, UNTESTED, is_regression
from bench.report.findings import findings
from bench.report.output import ReportWriteError
from bench.report.plots import plot_accuracy, plot_scaling, plot_throughput
from bench.report.render import build_report, markdown_table
from bench.report.tables import (
    accuracy_table,
    best_batch_sizes,
    compare,
    failures,
    family_comparison,
    latest_ok,
    provenance_summary,
    scaling_efficiency,
    step_time_tables,
    throughput_ci_tables,
    throughput_tables,
    vgg_vs_resnet,
    where_time_goes,
)
from bench.results.load import load_results

__all__ = ["accuracy_table", "best_batch_sizes", "build_report", "compare", "failures", "family_comparison", "findings",
           "latest_ok",
           "load_results", "main", "plot_accuracy", "plot_scaling", "plot_throughput", "provenance_summary",
           "scaling_efficiency", "step_time_tables", "throughput_ci_tables", "throughput_tables",
           "vgg_vs_resnet", "where_time_goes"]
FORMATS = ("md", "html")


def _say(text: object) -> None:
    """Print to stdout in any locale: what its encoding cannot hold is written as escapes."""
    text = str(text)
    enc = sys.stdout.encoding or "utf-8"
    try:
        text.encode(enc, sys.stdout.errors or "strict")
    except UnicodeEncodeError:
        text = text.encode(enc, "backslashreplace").decode(enc)
    print(text)


def build_parser() -> argparse.ArgumentParser:
    """The `python -m bench.report` command line (one-line errors, no abbreviations)."""
    p = OneLineParser(prog="python -m bench.report", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="*", help="result CSVs")
    p.add_argument("--out", default="results/report", help="folder for report.md/report.html and plots")
    p.add_argument("--format", default="md,html", help="md and/or html, comma-separated")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 if a configuration is significantly slower by more than --threshold")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="the slowdown --fail-on-regression tolerates, as a fraction in [0, 1) (default 0.05)")
    return p


def _compare(old: str, new: str, fail_on_regression: bool, threshold: float) -> int:
    table = compare(load_results([old]), load_results([new]))
    if table.empty:  # a gate that compared nothing must not pass, and a plain compare has nothing to say
        raise BenchInputError(f"nothing to compare: no configuration has an ok row in both {old} and {new}")
    shown = table.drop(columns=["decisive"]).assign(ratio=[f"{r:.3f}" for r in table["ratio"]])
    _say(markdown_table(shown, ".2f"))
    counts = table["verdict"].value_counts()
    _say(f"{len(table)} configuration(s) in both: {counts.get(SLOWER, 0)} {SLOWER}, {counts.get(FASTER, 0)} {FASTER}, "
         f"{counts.get(NO_DIFFERENCE, 0)} {NO_DIFFERENCE} at {ALPHA:.0%}"
         + (f", {counts[UNTESTED]} {UNTESTED} (no step-time statistics)" if counts.get(UNTESTED, 0) else ""))
    if (table["test"] == ACROSS_STEPS).any():
        _say("note: a one-run comparison tests step times within each run and ignores the variation between "
             "runs, which is often larger: repeat each configuration (4 or more runs a side) for a test across runs")
    regressions = [is_regression(r, v, d, threshold) for r, v, d in zip(table["ratio"], table["verdict"], table["decisive"])]
    undecided = int(((table["verdict"] == SLOWER) & (table["ratio"] < 1.0 - threshold) & ~table["decisive"]).sum())
    if fail_on_regression:
        _say(f"{sum(regressions)} regression(s): significantly slower across runs by more than {threshold:.0%}")
        if undecided:
            print(f"warning: {undecided} configuration(s) slower by more than {threshold:.0%} without enough runs to "
                  "decide (a one-run t-test across steps, or too few runs for Mann-Whitney U to reach 5%): "
                  "not counted as regressions", file=sys.stderr)
    return ExitCode.FAILED if fail_on_regression and any(regressions) else ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if not 0.0 <= args.threshold < 1.0:
            raise BenchInputError(f"--threshold takes a fraction in [0, 1). Received: threshold={args.threshold}")
        if args.compare:
            return _compare(*args.compare, args.fail_on_regression, args.threshold)
        if not args.csv:
            raise BenchInputError("give at least one results CSV (or --compare OLD NEW)")
        formats = [f.strip() for f in args.format.split(",") if f.strip()]
        if not formats or any(f not in FORMATS for f in formats):
            raise BenchInputError(f"--format takes md and/or html. Received: format={args.format}")
        df = load_results(args.csv)
        files = build_report(df, Path(args.out), formats)
    except BenchInputError as e:
        return input_error(e)
    except ReportWriteError as e:  # the disk failed, not the input
        print(f"error: {one_line(e.strerror)}", file=sys.stderr)
        return ExitCode.FAILED
    for f in files:
        _say(f)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
