"""report.md and report.html, each rendered from the same tables (DataFrames) and plots."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import plots, tables

NONE_MD = "_none_"
NONE_HTML = "<p>None.</p>"
STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}")


@dataclass(frozen=True)
class Section:
    """One titled table of the report, and how many decimals its floats get."""
    title: str
    table: pd.DataFrame
    floatfmt: str = ".1f"


def sections(df: pd.DataFrame) -> list[Section]:
    """The report's tables, in order."""
    out = [Section(f"Throughput: images/sec, median [95% CI] ({t})", x)
           for t, x in tables.throughput_ci_tables(df).items()]
    out += [Section(f"Step time: median ms ({t})", x) for t, x in tables.step_time_tables(df).items()]
    return out + [
        Section("Inference latency per batch (ms) and images/sec", tables.latency_table(df), ".2f"),
        Section("Peak memory beside images/sec (MiB; estimate made before the run)", tables.memory_table(df), ".1f"),
        Section("Largest batch that fits (sweep --find-max-batch)", tables.max_batch_table(df), ".1f"),
        Section("Model families at equal batch size (each family's fastest model; GFLOP/s achieved)",
                tables.family_comparison(df), ".3f"),
        Section("VGG vs ResNet (ratio VGG / ResNet)", tables.vgg_vs_resnet(df), ".3f"),
        Section("TensorFlow vs JAX (ratio JAX / TensorFlow)", tables.backend_comparison(df), ".3f"),
        Section("Scaling efficiency", tables.scaling_efficiency(df), ".3f"),
        Section("Where the time goes: median step split into input wait, exposed communication (synced minus "
                "--no-gradient-sync, 95% CI) and compute", tables.where_time_goes(df), ".3f"),
        Section("Best batch size (by images/sec)", tables.best_batch_sizes(df)),
        Section("Accuracy and time to accuracy", tables.accuracy_table(df), ".4f"),
        Section("Failures", tables.failures(df)),
    ]


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


def html_table(df: pd.DataFrame | None, floatfmt: str = ".1f") -> str:
    """An HTML table made by pandas, or a short sentence for an empty one."""
    if df is None or df.empty:
        return NONE_HTML
    d = _display(df).astype(object)  # one cell formatter for every dtype, nullable ones included
    d = d.map(lambda v: _cell(v, floatfmt))
    return d.to_html(index=False, border=0, escape=True)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def render_markdown(intro: str, shared: dict[str, str], warnings: list[str], secs: list[Section],
                    pngs: dict[str, Path]) -> str:
    """report.md: the plots are linked by file name, next to it."""
    prov = "".join(f"- {k}: {v}\n" for k, v in shared.items()) + "".join(f"- **warning: {w}**\n" for w in warnings)
    md = [f"# cnnbench report\n\n{intro}\n## Provenance\n\n{prov or NONE_MD}\n"]
    md += [f"## {s.title}\n\n{markdown_table(s.table, s.floatfmt)}\n" for s in secs]
    md += ["## Plots\n\n"] + [f"![{t}]({p.name})\n\n" for t, p in pngs.items()]
    return "".join(md)


def render_html(intro: str, shared: dict[str, str], warnings: list[str], secs: list[Section],
                pngs: dict[str, Path]) -> str:
    """report.html: one self-contained page, the plots embedded as data URIs."""
    esc = html.escape
    items = [f"<li>{esc(k)}: {esc(v)}</li>" for k, v in shared.items()]
    items += [f"<li><b>warning: {esc(w)}</b></li>" for w in warnings]
    parts = [f"<h1>cnnbench report</h1><p>{esc(intro)}</p><h2>Provenance</h2>",
             f"<ul>{''.join(items)}</ul>" if items else NONE_HTML]
    parts += [f"<h2>{esc(s.title)}</h2>{html_table(s.table, s.floatfmt)}" for s in secs]
    parts.append("<h2>Plots</h2>")
    parts += [f"<h3>{esc(t)}</h3><img alt=\"{esc(t)}\" src=\"{_data_uri(p)}\">" for t, p in pngs.items()]
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>cnnbench report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def build_report(df: pd.DataFrame, out: Path, formats: Sequence[str] = ("md", "html")) -> list[Path]:
    """Write the PNG plots and report.md and/or report.html into `out`; return the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = {"images/sec against batch size": plots.plot_throughput(df, out / "throughput.png"),
            "inference latency against batch size": plots.plot_latency(df, out / "latency.png"),
            "scaling efficiency against workers": plots.plot_scaling(df, out / "scaling.png"),
            "accuracy against wall time": plots.plot_accuracy(df, out / "accuracy.png")}
    shared, warnings = tables.provenance_summary(df)
    n_ok = int((df["status"] == "ok").sum())
    intro = f"{len(df)} row(s), {n_ok} ok, from {', '.join(sorted(df['source_file'].unique()))}.\n"
    secs = sections(df)
    written = list(pngs.values())
    if "md" in formats:
        (out / "report.md").write_text(render_markdown(intro, shared, warnings, secs, pngs))
        written.append(out / "report.md")
    if "html" in formats:
        (out / "report.html").write_text(render_html(intro.strip(), shared, warnings, secs, pngs))
        written.append(out / "report.html")
    return written
