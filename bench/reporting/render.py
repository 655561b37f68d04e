"""report.md and report.html, each rendered from the same findings, tables (DataFrames) and plots,
in the same order: findings first, then one section per question, each with its plot before
its tables, and the provenance last.

report.html is one self-contained file: its plots are data URIs and its stylesheet is inline,
so it loads nothing and can be mailed or attached to a CI run as it is.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import plots, tables
from .findings import Finding, findings

NONE_MD = "_none_"
FOLD_ROWS = 12  # a section with more table rows than this (or several tables) folds them away
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;line-height:1.45;color:#1d1d1f;
 max-width:1180px;margin:0 auto;padding:1.2em 1.6em}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1em 0 .3em}
p.note{color:#555;margin:.2em 0 .8em}
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

    @property
    def rows(self) -> int:
        return sum(len(t.frame) for t in self.tables)

    @property
    def folded(self) -> bool:
        return len(self.tables) > 1 or self.rows > FOLD_ROWS


# the plots, by section; a section without rows gets none
PLOTS: dict[str, tuple[str, str, Callable[[pd.DataFrame, Path], Path]]] = {
    "throughput": ("throughput.png", "images/sec against per-replica batch size (median, 95% CI)",
                   plots.plot_throughput),
    "scaling": ("scaling.png", "scaling efficiency against replicas (95% CI)", plots.plot_scaling),
    "latency": ("latency.png", "inference latency p50 and p99 against batch size", plots.plot_latency),
    "accuracy": ("accuracy.png", "test top-1 against wall time", plots.plot_accuracy),
}


def _tables(named: dict[str, pd.DataFrame], floatfmt: str = ".1f") -> list[Table]:
    return [Table(t, x, floatfmt) for t, x in named.items() if not x.empty]


def _one(frame: pd.DataFrame, floatfmt: str) -> list[Table]:
    return [Table("", frame, floatfmt)] if not frame.empty else []


def sections(df: pd.DataFrame) -> list[Section]:
    """The report's sections, in order, each with only its non-empty tables."""
    t = tables
    return [
        Section("throughput", "Throughput", "Median images/sec with its 95% CI, model × per-replica batch size, "
                "one table per strategy, replica count and setting.", _tables(t.throughput_ci_tables(df)),
                "throughput"),
        Section("step-time", "Step time", "Median step time in ms, same layout.", _tables(t.step_time_tables(df))),
        Section("model-families", "Model families", "Each family's fastest model at equal batch size: images/sec, "
                "top-1, forward GFLOPs per image, the GFLOP/s it achieves (×3 passes in training), and images/sec "
                "relative to ResNet's fastest with its 95% CI.", _one(t.family_comparison(df), ".3f")),
        Section("vgg-vs-resnet", "VGG vs ResNet", "images/sec and top-1 ratios VGG / ResNet, with the images/sec "
                "ratio's 95% CI.", _one(t.vgg_vs_resnet(df), ".3f")),
        Section("scaling-efficiency", "Scaling efficiency", "images/sec(N) / (N × images/sec(1)) with its 95% CI; "
                "the baseline is the same strategy at one replica, else single. One-replica rows, each its own "
                "baseline, are left out.", _one(t.scaling_efficiency(df, baselines=False), ".3f"), "scaling"),
        Section("where-the-time-goes", "Where the time goes", "Each distributed configuration's median step split "
                "into input wait, exposed communication (synced minus --no-gradient-sync, 95% CI) and compute.",
                _one(t.where_time_goes(df), ".3f")),
        Section("tensorflow-vs-jax", "TensorFlow vs JAX", "images/sec of rows that differ only in backend, and "
                "the ratio JAX / TensorFlow with its 95% CI.", _one(t.backend_comparison(df), ".3f")),
        Section("inference-latency", "Inference latency", "Per-batch latency percentiles (ms), per image, and "
                "images/sec.", _one(t.latency_table(df), ".2f"), "latency"),
        Section("memory", "Memory", "Peak memory beside images/sec (MiB), and the estimate made before the run.",
                _one(t.memory_table(df), ".1f")),
        Section("largest-batch", "Largest batch that fits", "Per sweep --find-max-batch search.",
                _one(t.max_batch_table(df), ".1f")),
        Section("best-batch-size", "Best batch size", "The per-replica batch size with the most images/sec.",
                _one(t.best_batch_sizes(df), ".1f")),
        Section("accuracy", "Accuracy", "Test top-1/top-5 and time to accuracy.", _one(t.accuracy_table(df), ".4f"),
                "accuracy"),
        Section("failures", "Failures", "Every row that did not end ok, with its error.", _one(t.failures(df), ".1f")),
    ]


# ---- cells and tables -------------------------------------------------------------------------
def _display(df: pd.DataFrame) -> pd.DataFrame:
    """The table as shown: a named index (model) becomes a column; config_key, a tuple of
    everything, is for code and is left out."""
    d = df.drop(columns=["config_key"], errors="ignore")
    d = d.reset_index() if d.index.name else d
    d.columns = [str(c) for c in d.columns]
    return d


def _cell(v: object, floatfmt: str) -> str:
    if pd.isna(v):
        return ""
    return format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v)


def markdown_table(df: pd.DataFrame | None, floatfmt: str = ".1f") -> str:
    """A pipe table, or `_none_` for an empty one."""
    if df is None or df.empty:
        return NONE_MD + "\n"
    d = _display(df)
    rows = [[_cell(v, floatfmt).replace("|", "\\|").replace("\n", " ") for v in row]
            for row in d.itertuples(index=False)]
    head = "| " + " | ".join(d.columns) + " |\n|" + "---|" * len(d.columns) + "\n"
    return head + "".join("| " + " | ".join(row) + " |\n" for row in rows)


def html_table(df: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """An HTML table made by pandas, in a box that scrolls sideways rather than widen the page."""
    d = _display(df).astype(object)  # one cell formatter for every dtype, nullable ones included
    d = d.map(lambda v: _cell(v, floatfmt))
    return f'<div class="scroll">{d.to_html(index=False, border=0, escape=True)}</div>'


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


# ---- the two renderings -------------------------------------------------------------------------
def _plot_of(s: Section, pngs: dict[str, Path]) -> tuple[str, Path] | None:
    return (PLOTS[s.plot][1], pngs[s.plot]) if s.plot in pngs else None


def render_markdown(intro: str, facts: list[Finding], secs: list[Section], pngs: dict[str, Path],
                    shared: dict[str, str], warnings: list[str]) -> str:
    """report.md: the same order as the HTML; the plots are linked by file name, next to it."""
    md = [f"# cnnbench report\n\n{intro}\n\n## Findings\n\n"]
    md += [f"- {f.text}" + (f" ([table](#{f.section}))" if f.section else "") + "\n" for f in facts]
    for s in secs:
        md.append(f"\n## {s.title}\n\n{s.note}\n\n")
        plot = _plot_of(s, pngs)
        if plot:
            md.append(f"![{plot[0]}]({plot[1].name})\n\n")
        for t in s.tables:
            md.append((f"### {t.caption}\n\n" if t.caption else "") + markdown_table(t.frame, t.floatfmt) + "\n")
    prov = "".join(f"- {k}: {v}\n" for k, v in shared.items()) + "".join(f"- **warning: {w}**\n" for w in warnings)
    md.append(f"\n## Provenance\n\n{prov or NONE_MD}\n")
    return "".join(md)


def render_html(intro: str, facts: list[Finding], secs: list[Section], pngs: dict[str, Path],
                shared: dict[str, str], warnings: list[str]) -> str:
    """report.html: findings, then each section's plot and its tables (folded when long)."""
    esc = html.escape
    items = "".join(f'<li class="{f.kind}" data-finding="{f.kind}">{esc(f.text)}'
                    + (f' <a href="#{f.section}">table</a>' if f.section else "") + "</li>" for f in facts)
    parts = [f"<h1>cnnbench report</h1><p class=\"note\">{esc(intro)}</p>",
             f'<h2 id="findings">Findings</h2><ul class="findings">{items}</ul>']
    for s in secs:
        parts.append(f'<section id="{s.id}"><h2>{esc(s.title)}</h2><p class="note">{esc(s.note)}</p>')
        plot = _plot_of(s, pngs)
        if plot:
            parts.append(f'<img alt="{esc(plot[0])}" src="{_data_uri(plot[1])}">')
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


def build_report(df: pd.DataFrame, out: Path, formats: Sequence[str] = ("md", "html")) -> list[Path]:
    """Write the plots that have data, and report.md and/or report.html, into `out`; return the
    files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    secs = [s for s in sections(df) if s.tables]
    pngs = {s.plot: PLOTS[s.plot][2](df, out / PLOTS[s.plot][0]) for s in secs if s.plot}
    for key, (name, _, _) in PLOTS.items():  # a plot from an earlier report of other rows is stale
        if key not in pngs:
            (out / name).unlink(missing_ok=True)
    shared, warnings = tables.provenance_summary(df)
    n_ok = int((df["status"] == "ok").sum())
    intro = f"{len(df)} row(s), {n_ok} ok, from {', '.join(sorted(df['source_file'].unique()))}."
    facts = findings(df)
    written = list(pngs.values())
    if "md" in formats:
        (out / "report.md").write_text(render_markdown(intro, facts, secs, pngs, shared, warnings))
        written.append(out / "report.md")
    if "html" in formats:
        (out / "report.html").write_text(render_html(intro, facts, secs, pngs, shared, warnings))
        written.append(out / "report.html")
    return written
