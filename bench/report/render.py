"""report.md and report.html, each rendered from the same findings, tables (DataFrames) and plots,
in the same order: findings first, then one section per question, each with its plot before
its tables, and the provenance last.

report.html is one self-contained file: its plots are data URIs and its stylesheet is inline,
so it loads nothing and can be mailed or attached to a CI run as it is.

Text from the rows is escaped for each page (`bench.report.text`): no cell can carry markup
into either. A row that a table or a plot cannot show is named in a note under its section; a
table, plot or finding that fails all the same becomes such a note, never a traceback.
Files are written by `bench.report.output`: UTF-8, all or none, only files the report owns.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from bench.errors import Status, one_line
from bench.report import collectives, inputs, plots, predictions, tables
from bench.report.findings import FINDERS, Finding
from bench.report.output import check_out, write_files
from bench.report.text import md_cell, md_text, visible
from bench.results.load import apart

NONE_MD = "_none_"
FOLD_ROWS = 12  # a section with more table rows than this (or several tables) folds them away
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;line-height:1.45;color:#1d1d1f;
 max-width:1180px;margin:0 auto;padding:1.2em 1.6em}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1em 0 .3em}
p.note{color:#555;margin:.2em 0 .8em}ul.left-out{color:#9a3412;font-size:.9em}
img{display:block;max-width:100%;height:auto;margin:.5em 0}
.findings{background:#f5f8fc;border:1px solid #d5e1ef;border-radius:6px;padding:.6em 1.2em .6em 2.2em}
.findings li{margin:.35em 0}.findings li.warning{color:#9a3412}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.85em;font-variant-numeric:tabular-nums;margin:.3em 0 1em}
td,th{border:1px solid #d0d0d0;padding:2px 7px;text-align:right;overflow-wrap:break-word}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
details{margin:.4em 0 1em}summary{cursor:pointer;color:#1f4e8c}
@media (max-width:900px){body{padding:.6em}table{font-size:.8em}}
"""


@dataclass(frozen=True)
class Table:
    """One table of a section, its caption (empty for a section's only table) and how many
    decimals its floats get."""
    caption: str
    frame: pd.DataFrame
    floatfmt: str = ".1f"


@dataclass(frozen=True)
class Section:
    """One question the report answers: an anchor id, a title, a line on what it shows, its plot
    (a key of PLOTS, if any) and its non-empty tables."""
    id: str
    title: str
    note: str
    tables: list[Table] = field(default_factory=list)
    plot: str | None = None
    notes: list[str] = field(default_factory=list)  # rows it leaves out, parts that failed

    @property
    def rows(self) -> int:
        return sum(len(t.frame) for t in self.tables)

    @property
    def folded(self) -> bool:
        return len(self.tables) > 1 or self.rows > FOLD_ROWS


# the plots, by section (file name, caption, figure(rows, notes)); a section without rows gets none
PLOTS: dict[str, tuple[str, str, Callable[..., Any]]] = {
    "throughput": ("throughput.png", "images/sec against per-replica batch size (median, 95% CI)",
                   plots.throughput_figure),
    "scaling": ("scaling.png", "scaling efficiency against replicas (95% CI)", plots.scaling_figure),
    "latency": ("latency.png", "inference latency p50 and p99 against batch size", plots.latency_figure),
    "accuracy": ("accuracy.png", "test top-1 against wall time", plots.accuracy_figure),
    "collectives": ("collectives.png", "all-reduce bus bandwidth against message size (median, 95% CI)",
                    collectives.bus_bandwidth_figure),
    "predictions": ("predicted_scaling.png", "PREDICTED scaling efficiency against devices: band and midpoint, "
                    "measured points on it", predictions.band_figure),
}
MD, HTML = "report.md", "report.html"


def failed_note(what: str, e: Exception) -> str:
    """A part of the report that could not be made, in one line (the rest is still written)."""
    return f"the {what} could not be made ({type(e).__name__}: {one_line(e)})"


def _tables(named: Callable[[], dict[str, pd.DataFrame]], floatfmt: str = ".1f") -> Callable[[], list[Table]]:
    return lambda: [Table(t, x, floatfmt) for t, x in named().items() if not x.empty]


def _one(frame: Callable[[], pd.DataFrame], floatfmt: str) -> Callable[[], list[Table]]:
    return lambda: [Table("", f, floatfmt) for f in [frame()] if not f.empty]


def _section(sid: str, title: str, note: str, make: Callable[[], list[Table]],
             plot: str | None = None) -> Section:
    """A section with its tables; a table that fails to build becomes a note."""
    try:
        return Section(sid, title, note, make(), plot)
    except Exception as e:  # noqa: BLE001 - a report shows what it can and names what it could not
        return Section(sid, title, note, [], plot, [failed_note(f"{title} table", e)])


def sections(df: pd.DataFrame) -> list[Section]:
    """The report's sections, in order, each with only its non-empty tables and with a note for
    each row a table must leave out."""
    secs = [_section(*args) for args in _section_specs(df)]
    try:
        unusable = {**tables.unusable_rows(df), inputs.SECTION: inputs.failed(df)}
    except Exception as e:  # noqa: BLE001
        unusable = {"failures": [failed_note("list of rows left out", e)]}
    for s in secs:
        s.notes.extend(unusable.get(s.id, []))
    return secs


def _section_specs(df: pd.DataFrame) -> list[tuple]:
    t = tables
    return [
        ("throughput", "Throughput", "Median images/sec with its 95% CI, model × per-replica batch size, "
         "one table per strategy, replica count and setting.", _tables(lambda: t.throughput_ci_tables(df)),
         "throughput"),
        ("across-runs", "Across runs", "Configurations run with --repeats (each repeat a fresh process): the "
         "median of the runs' median images/sec, its between-run 95% CI (order statistics of the median over "
         "the runs: below 6 runs their whole range, which covers 75% at 3 runs, 88% at 4, 94% at 5) and the "
         "coefficient of variation, beside a single run's own CI; runs ok and failed. From 3 ok runs, every "
         "table and finding uses these figures.", _one(lambda: t.across_runs_table(df), ".1f")),
        ("step-time", "Step time", "Median step time in ms, same layout.", _tables(lambda: t.step_time_tables(df))),
        ("model-families", "Model families", "Each family's fastest model at equal batch size: images/sec, "
         "top-1, forward GFLOPs per image, the GFLOP/s it achieves (×3 passes in training), and images/sec "
         "relative to ResNet's fastest with its 95% CI.", _one(lambda: t.family_comparison(df), ".3f")),
        ("vgg-vs-resnet", "VGG vs ResNet", "images/sec and top-1 ratios VGG / ResNet, with the images/sec "
         "ratio's 95% CI.", _one(lambda: t.vgg_vs_resnet(df), ".3f")),
        ("scaling-efficiency", "Scaling efficiency", "images/sec(N) / (N × images/sec(1)) with its 95% CI; "
         "the baseline is the same strategy at one replica, else single. One-replica rows, each its own "
         "baseline, are left out.", _one(lambda: t.scaling_efficiency(df, baselines=False), ".3f"), "scaling"),
        ("where-the-time-goes", "Where the time goes", "Each distributed configuration's median step split "
         "into input wait, exposed communication (synced minus --no-gradient-sync, 95% CI) and compute.",
         _one(lambda: t.where_time_goes(df), ".3f")),
        (inputs.SECTION, "Input pipeline", "Each input ceiling (--mode input: the pipeline alone, no model; "
         "median images/sec with its 95% CI and p99 latency per batch) beside the training rows of the same pipeline "
         "(data, image size, batch size, backend, data workers, preprocessing, strategy, replicas): training / "
         f"ceiling with its 95% CI, the step's input wait as a share of the step, and the verdict ({inputs.RULE}). "
         "No other section uses the input rows.", _one(lambda: inputs.table(df), ".3f")),
        ("tensorflow-vs-jax", "TensorFlow vs JAX", "images/sec of rows that differ only in backend, and "
         "the ratio JAX / TensorFlow with its 95% CI.", _one(lambda: t.backend_comparison(df), ".3f")),
        ("inference-latency", "Inference latency", "Per-batch latency percentiles (ms), per image, and "
         "images/sec.", _one(lambda: t.latency_table(df), ".2f"), "latency"),
        ("memory", "Memory", "Peak memory beside images/sec (MiB), and the estimate made before the run.",
         _one(lambda: t.memory_table(df), ".1f")),
        ("energy", "Energy", "Images per joule beside images/sec over the timed steps, with the mean power of the "
         "devices measured (W: GPU boards, or the CPU packages through RAPL; the host outside them), joules per step "
         "and the power source; only rows that measured energy (docs/measuring.md#energy).",
         _one(lambda: t.energy_table(df), ".2f")),
        ("largest-batch", "Largest batch that fits", "Per sweep --find-max-batch search.",
         _one(lambda: t.max_batch_table(df), ".1f")),
        ("best-batch-size", "Best batch size", "The per-replica batch size with the most images/sec.",
         _one(lambda: t.best_batch_sizes(df), ".1f")),
        ("accuracy", "Accuracy", "Test top-1/top-5 and time to accuracy.", _one(lambda: t.accuracy_table(df), ".4f"),
         "accuracy"),
        ("time-to-train", "Time to train", "Accuracy mode with --repeats and --target-accuracy: each run's "
         "time to the target, how many reached it, and MLPerf's olympic mean (the fastest and the slowest run "
         "dropped, a run that missed the target counting as the slowest; needs 3 runs).",
         _one(lambda: t.time_to_train_table(df), ".1f")),
        ("collective-bandwidth", "Collective bandwidth", "All-reduce bus bandwidth in GB/s (size / median time × "
         "2(n−1)/n, nccl-tests' definition) by message size, one column per strategy, backend, rank count, place "
         "and dtype (python -m bench.collectives). On one host the ranks share its cores and talk over loopback.",
         _one(lambda: collectives.bus_bandwidth_table(df), ".4f"), "collectives"),
        ("predicted-scaling", "Predicted scaling", "PREDICTIONS, not measurements (cnnbench predict, "
         "source=prediction): step time as a band from full overlap of the all-reduce with the backward pass "
         "to none, its midpoint, images/sec, efficiency and communication share by device count, each series "
         "from the inputs its rows name (pred_basis); the measured step of the same configuration and place "
         "beside it where one was run. No other section uses these rows.",
         _one(lambda: predictions.table(df), ".3g"), "predictions"),
        ("failures", "Failures", "Every row that did not end ok, with its error.", _one(lambda: t.failures(df), ".1f")),
    ]


# ---- cells and tables -------------------------------------------------------------------------
def _display(df: pd.DataFrame) -> pd.DataFrame:
    """The table as shown: a named index (model) becomes a column; config_key, a tuple of
    everything, is for code and is left out."""
    d = df.drop(columns=["config_key"], errors="ignore")
    if "p_value" in d:  # a p-value needs its own precision: 0.000 would read as certainty
        d = d.assign(p_value=[tables.p_text(p) if isinstance(p, float) and np.isfinite(p) else p for p in d["p_value"]])
    d = d.reset_index() if d.index.name else d
    d.columns = [str(c) for c in d.columns]
    return d


def _cell(v: object, floatfmt: str) -> str:
    if v is None or v is pd.NA or (np.isscalar(v) and pd.isna(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return format(v, floatfmt)
    return visible(v)


def markdown_table(df: pd.DataFrame | None, floatfmt: str = ".1f") -> str:
    """A pipe table, or `_none_` for an empty one. Every cell is literal text (md_cell): no row
    can carry markup, a line break or a `|` out of its cell."""
    if df is None or df.empty:
        return NONE_MD + "\n"
    d = _display(df)
    rows = [[md_cell(_cell(v, floatfmt)) for v in row] for row in d.itertuples(index=False)]
    head = "| " + " | ".join(md_cell(c) for c in d.columns) + " |\n|" + "---|" * len(d.columns) + "\n"
    return head + "".join("| " + " | ".join(row) + " |\n" for row in rows)


def html_table(df: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """An HTML table made by pandas, in a box that scrolls sideways rather than widen the page."""
    d = _display(df).astype(object)  # one cell formatter for every dtype, nullable ones included
    d = d.map(lambda v: _cell(v, floatfmt))
    d.columns = [visible(c) for c in d.columns]
    return f'<div class="scroll">{d.to_html(index=False, border=0, escape=True)}</div>'


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


# ---- the two renderings -------------------------------------------------------------------------
def _plot_of(s: Section, pngs: dict[str, bytes]) -> tuple[str, str, bytes] | None:
    """(caption, file name, PNG bytes) of a section's plot, if it has one."""
    return (PLOTS[s.plot][1], PLOTS[s.plot][0], pngs[s.plot]) if s.plot in pngs else None


def render_markdown(intro: str, facts: list[Finding], secs: list[Section], pngs: dict[str, bytes],
                    shared: dict[str, str], warnings: list[str]) -> str:
    """report.md: the same order as the HTML; the plots are linked by file name, next to it.
    Text from the rows is literal (md_text), as html.escape makes it in report.html."""
    md = [f"# cnnbench report\n\n{md_text(intro)}\n\n## Findings\n\n"]
    md += [f"- {md_text(f.text)}" + (f" ([table](#{f.section}))" if f.section else "") + "\n" for f in facts]
    for s in secs:
        md.append(f"\n## {s.title}\n\n{s.note}\n\n")
        md += [f"- {md_text(n)}\n" for n in s.notes] + (["\n"] if s.notes else [])
        plot = _plot_of(s, pngs)
        if plot:
            md.append(f"![{plot[0]}]({plot[1]})\n\n")
        for t in s.tables:
            md.append((f"### {md_text(t.caption)}\n\n" if t.caption else "") + markdown_table(t.frame, t.floatfmt) + "\n")
    prov = ("".join(f"- {k}: {md_text(v)}\n" for k, v in shared.items())
            + "".join(f"- **warning: {md_text(w)}**\n" for w in warnings))
    md.append(f"\n## Provenance\n\n{prov or NONE_MD}\n")
    return "".join(md)


def render_html(intro: str, facts: list[Finding], secs: list[Section], pngs: dict[str, bytes],
                shared: dict[str, str], warnings: list[str]) -> str:
    """report.html: findings, then each section's plot and its tables (folded when long)."""
    def esc(text: object) -> str:
        return html.escape(visible(text))

    items = "".join(f'<li class="{f.kind}" data-finding="{f.kind}">{esc(f.text)}'
                    + (f' <a href="#{f.section}">table</a>' if f.section else "") + "</li>" for f in facts)
    parts = [f"<h1>cnnbench report</h1><p class=\"note\">{esc(intro)}</p>",
             f'<h2 id="findings">Findings</h2><ul class="findings">{items}</ul>']
    for s in secs:
        parts.append(f'<section id="{s.id}"><h2>{esc(s.title)}</h2><p class="note">{esc(s.note)}</p>')
        if s.notes:
            parts.append('<ul class="left-out">' + "".join(f"<li>{esc(n)}</li>" for n in s.notes) + "</ul>")
        plot = _plot_of(s, pngs)
        if plot:
            parts.append(f'<img alt="{esc(plot[0])}" src="{_data_uri(plot[2])}">')
        body = "".join((f"<h3>{esc(t.caption)}</h3>" if t.caption else "") + html_table(t.frame, t.floatfmt)
                       for t in s.tables)
        if s.folded:
            what = f"{len(s.tables)} tables" if len(s.tables) > 1 else "the table"
            body = f"<details><summary>Show {what} ({s.rows} rows)</summary>{body}</details>"
        parts.append(body + "</section>")
    items = [f"<li>{esc(k)}: {esc(v)}</li>" for k, v in shared.items()]
    items += [f"<li><b>warning: {esc(w)}</b></li>" for w in warnings]
    parts.append(f'<section id="provenance"><h2>Provenance</h2><ul>{"".join(items)}</ul></section>')
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>cnnbench report</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def _findings(df: pd.DataFrame) -> tuple[list[Finding], list[str]]:
    """The findings, each kind on its own: one that fails becomes a note, the others stay."""
    facts, notes = [], []
    for make in (*FINDERS, inputs.input_findings, collectives.collective_findings, predictions.prediction_findings):
        try:
            facts += make(df)
        except Exception as e:  # noqa: BLE001 - a report shows what it can and names what it could not
            notes.append(failed_note(f"finding '{make.__name__}'", e))
    return facts, notes


def _plot(s: Section, df: pd.DataFrame) -> bytes | None:
    """A section's plot as PNG bytes; the rows it leaves out, or its failure, become notes."""
    name, caption, figure = PLOTS[s.plot]
    notes: list[str] = []
    try:
        png = plots.png_bytes(figure(df, notes))
    except Exception as e:  # noqa: BLE001
        notes, png = [failed_note(f"plot {name}", e)], None
    s.notes.extend(dict.fromkeys(notes))  # a row in two panels is named once
    return png


def build_report(df: pd.DataFrame, out: Path, formats: Sequence[str] = ("md", "html")) -> list[Path]:
    """Write the plots that have data, and report.md and/or report.html, into `out`; return the
    files written. Only files the report owns are overwritten or deleted (bench.report.output);
    BenchInputError before anything is drawn if one is not, ReportWriteError if the disk fails."""
    out = Path(out)
    secs = [s for s in sections(df) if s.tables or s.notes]
    names = {PLOTS[s.plot][0] for s in secs if s.plot and s.tables} | {
        name for f, name in (("md", MD), ("html", HTML)) if f in formats}
    check_out(out, names)  # refused before minutes of plotting, not after
    pngs = {s.plot: png for s in secs if s.plot and s.tables for png in [_plot(s, df)] if png is not None}
    shared, warnings = tables.provenance_summary(df)
    n_ok = int((df["status"] == Status.OK).sum())
    held = apart(df, "inputs")  # kept beside df's own rows, for the Input pipeline section alone
    files = sorted({*df["source_file"].unique(), *(held["source_file"].unique() if len(held) else ())})
    intro = (f"{len(df)} row(s), {n_ok} ok, from {', '.join(files)}."
             + (f" Besides them, {len(held)} input-pipeline row(s) (--mode input), used by that section alone."
                if len(held) else ""))
    facts, failed = _findings(df)
    if failed:
        secs.append(Section("report-notes", "Report notes", "Parts of this report that could not be made.",
                            notes=failed))
    files = {PLOTS[key][0]: png for key, png in pngs.items()}
    if "md" in formats:
        files[MD] = render_markdown(intro, facts, secs, pngs, shared, warnings).encode("utf-8", "backslashreplace")
    if "html" in formats:
        files[HTML] = render_html(intro, facts, secs, pngs, shared, warnings).encode("utf-8", "backslashreplace")
    # a plot from an earlier report of other rows is stale
    stale = {name for key, (name, _, _) in PLOTS.items() if key not in pngs}
    return write_files(out, files, stale)
