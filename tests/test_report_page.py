"""The HTML report as a reader gets it: findings first, their numbers recomputed here from the
raw rows (not by the report's code), sections with plots before tables, one self-contained
file, the markdown in the same order, and (where Chromium is installed) a page that fits the
screen."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from bench.report.render import build_report
from bench.results.load import load_results

FIXTURE = REPO / "tests" / "fixtures" / "report_runs.csv"
SWEEP = REPO / "results" / "examples" / "sweep" / "runs.csv"
FAMILIES = REPO / "results" / "examples" / "families" / "runs.csv"
BREAKDOWN = REPO / "results" / "examples" / "breakdown" / "runs.csv"
# what tells two configurations apart in these files, for recomputing "the latest row" here
CONFIG = ["model", "mode", "strategy", "backend", "batch_size", "replicas", "workers", "data", "precision", "xla",
          "width", "image_size", "num_classes", "steps", "epochs", "hvd_compression", "gradient_sync"]
NUMBER = r"([\d,]+(?:\.\d+)?)"


class Page(HTMLParser):
    """The findings (kind, text, link), the section ids and h2 titles in order, and every
    external reference of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.findings: list[dict] = []
        self.h2: list[str] = []
        self.ids: list[str] = []
        self.refs: list[str] = []
        self.tags: set[str] = set()
        self._li: dict | None = None
        self._h2: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.append(a["id"])
        for key in ("src", "href"):
            if key in a and not a[key].startswith(("#", "data:image/png;base64,")):
                self.refs.append(a[key])
        if tag == "li" and "data-finding" in a:
            self._li = {"kind": a["data-finding"], "text": "", "link": None}
        elif tag == "a" and self._li is not None:
            self._li["link"] = a.get("href")
        elif tag == "h2":
            self._h2 = []

    def handle_endtag(self, tag):
        if tag == "li" and self._li is not None:
            self._li["text"] = self._li["text"].strip().removesuffix("table").strip()
            self.findings.append(self._li)
            self._li = None
        elif tag == "h2" and self._h2 is not None:
            self.h2.append("".join(self._h2).strip())
            self._h2 = None

    def handle_data(self, data):
        if self._li is not None:
            self._li["text"] += data
        if self._h2 is not None:
            self._h2.append(data)


def _n(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """report(*csvs) -> (parsed page, report.html, report.md), each built once per module."""
    built: dict[tuple, tuple[Page, str, str]] = {}

    def make(*csvs) -> tuple[Page, str, str]:
        if csvs not in built:
            out = tmp_path_factory.mktemp("report")
            build_report(load_results(list(csvs)), out, ["md", "html"])
            html = (out / "report.html").read_text()
            built[csvs] = Page(html), html, (out / "report.md").read_text()
        return built[csvs]
    return make


def _latest_ok(*csvs) -> pd.DataFrame:
    """The most recent ok synced row per configuration, from the raw CSVs."""
    d = pd.concat([pd.read_csv(c, keep_default_na=False, na_values=[""]) for c in csvs], ignore_index=True)
    for col, default in (("mode", "train"), ("backend", "tensorflow"), ("gradient_sync", True),
                         ("hvd_compression", "none")):
        d[col] = d[col].fillna(default) if col in d else default
    d = d[d["status"] == "ok"]
    d = d[d["gradient_sync"].astype(str).str.lower() != "false"]
    key = [c for c in CONFIG if c in d]
    return d.sort_values("timestamp_utc", kind="stable").drop_duplicates(key, keep="last")


def _close(shown: str, value: float) -> bool:
    """A printed figure matches a value to its printed precision."""
    digits = len(shown.split(".")[1]) if "." in shown else 0
    return abs(_n(shown) - value) <= 0.5 * 10 ** -digits + 1e-9


def _lower_median(values: list[float]) -> float:
    return sorted(values)[(len(values) - 1) // 2]


@pytest.mark.parametrize("csv", [FIXTURE, SWEEP, FAMILIES, BREAKDOWN], ids=lambda p: p.parent.name)
def test_best_per_model_findings_match_the_rows(report, csv):
    page, _, _ = report(csv)
    ok = _latest_ok(csv)
    best = page.findings[:ok["model"].nunique()]
    assert [f["kind"] for f in best] == ["best"] * len(best)
    pattern = re.compile(rf"^(\S+), training: fastest at {NUMBER} images/sec \[95% CI {NUMBER}, {NUMBER}\] "
                         rf"with batch (\d+), (\w+) ×(\d+)")
    seen = set()
    for f in best:
        model, ips, lo, hi, batch, strategy, replicas = pattern.match(f["text"]).groups()
        rows = ok[ok["model"] == model]
        top = rows.loc[rows["images_per_sec_median"].idxmax()]
        assert _close(ips, top["images_per_sec_median"]), (f["text"], top["images_per_sec_median"])
        assert _close(lo, top["images_per_sec_median_ci95_low"]) and _close(hi, top["images_per_sec_median_ci95_high"])
        assert (int(batch), strategy, int(replicas)) == (top["batch_size"], top["strategy"], top["replicas"])
        assert f["link"] == "#throughput"
        seen.add(model)
    assert seen == set(ok["model"])


def _vgg_resnet_ratios(ok: pd.DataFrame) -> list[float]:
    """images/sec of vgg13 over resnet18 in every configuration both ran."""
    key = [c for c in CONFIG if c in ok and c != "model"]
    vgg, res = ok[ok["model"] == "vgg13"], ok[ok["model"] == "resnet18"]
    both = vgg.merge(res, on=key, suffixes=("_v", "_r"))
    return list(both["images_per_sec_median_v"] / both["images_per_sec_median_r"])


@pytest.mark.parametrize("csv", [FIXTURE, SWEEP, BREAKDOWN], ids=lambda p: p.parent.name)
def test_the_vgg_resnet_finding_is_the_median_ratio_with_the_range(report, csv):
    page, _, _ = report(csv)
    (f,) = [f for f in page.findings if f["kind"] == "family"]
    ratio, lo, hi, a, b, n = re.search(
        rf"^VGG vs ResNet: vgg13 runs at {NUMBER}× \[95% CI {NUMBER}, {NUMBER}\] the images/sec of resnet18 "
        rf"\(.*\); {NUMBER}× to {NUMBER}× over (\d+) settings", f["text"]).groups()
    ratios = _vgg_resnet_ratios(_latest_ok(csv))
    assert int(n) == len(ratios) > 1
    assert _close(ratio, _lower_median(ratios)) and _close(a, min(ratios)) and _close(b, max(ratios))
    assert _n(lo) < _n(ratio) < _n(hi)
    assert f["link"] == "#model-families"


def test_a_ratio_ci_comes_from_both_rows_cis(report):
    """Fixture, single b32 synthetic: vgg13 400 [390, 410] over resnet18 200 [195, 205]."""
    page, _, _ = report(FIXTURE)
    (f,) = [f for f in page.findings if f["kind"] == "family"]
    assert "2.00× [95% CI 1.93, 2.07]" in f["text"]
    down, up = np.hypot(np.log(400 / 390), np.log(205 / 200)), np.hypot(np.log(410 / 400), np.log(200 / 195))
    assert round(2 * np.exp(-down), 2) == 1.93 and round(2 * np.exp(up), 2) == 2.07


@pytest.mark.parametrize("csv", [FIXTURE, SWEEP, BREAKDOWN], ids=lambda p: p.parent.name)
def test_scaling_findings_give_each_strategy_at_its_largest_replica_count(report, csv):
    page, html, _ = report(csv)
    ok = _latest_ok(csv)
    found = [f for f in page.findings if f["kind"] == "scaling"]
    multi = ok[ok["replicas"] > 1]
    assert sorted(re.match(r"^(\w+) at", f["text"]).group(1) for f in found) == sorted(multi["strategy"].unique())
    key = [c for c in CONFIG if c in ok and c not in ("strategy", "replicas", "workers")]
    for f in found:
        strategy, n, eff = re.match(rf"^(\w+) at (\d+) replicas: scaling efficiency {NUMBER}", f["text"]).groups()
        rows = multi[(multi["strategy"] == strategy) & (multi["replicas"] == int(n))]
        assert int(n) == multi[multi["strategy"] == strategy]["replicas"].max()
        effs = []
        for _, r in rows.iterrows():
            same = ok[np.logical_and.reduce([ok[c].astype(str) == str(r[c]) for c in key]) & (ok["replicas"] == 1)]
            base = same[same["strategy"] == strategy]
            base = base if not base.empty else same[same["strategy"] == "single"]
            effs.append(r["images_per_sec_median"] / (int(n) * base["images_per_sec_median"].iloc[-1]))
        assert _close(eff, _lower_median(effs)), (f["text"], effs)
        if len(effs) > 1:
            a, b, count = re.search(rf"; {NUMBER} to {NUMBER} over (\d+) configurations", f["text"]).groups()
            assert _close(a, min(effs)) and _close(b, max(effs)) and int(count) == len(effs)
        assert f["link"] == "#scaling-efficiency"
    # the table below lists no baseline compared with itself
    table = html.split('id="scaling-efficiency"')[1].split("</section>")[0]
    rows = re.findall(r"<tr>\s*<td>[^<]*</td>\s*<td>[^<]*</td>\s*<td>[^<]*</td>\s*<td>[^<]*</td>\s*<td>(\d+)</td>", table)
    assert rows and "1" not in rows


def test_failures_are_counted_and_named(report):
    page, _, _ = report(FIXTURE)
    raw = pd.read_csv(FIXTURE, keep_default_na=False, na_values=[""])
    bad = raw[raw["status"] != "ok"]
    (f,) = [f for f in page.findings if f["kind"] == "failures"]
    assert f["text"].startswith(f"{len(bad)} of {len(raw)} runs did not end ok")
    for r in bad.itertuples():
        assert f"{r.model} b{r.batch_size} {r.strategy} ×{r.replicas}" in f["text"]
    assert f["link"] == "#failures" and "failures" in page.ids
    (w,) = [f for f in page.findings if f["kind"] == "warning"]
    assert "hostA" in w["text"] and "hostB" in w["text"]


def test_findings_come_first_and_every_link_lands(report):
    page, html, md = report(SWEEP)
    assert page.h2[0] == "Findings" and page.h2[-1] == "Provenance"
    assert html.index('class="findings"') < html.index("<img") < html.index("<table")
    assert page.findings[-1] == {"kind": "failures", "text": "No failures: all 20 runs ended ok.", "link": None}
    for f in page.findings[:-1]:
        assert f["link"].lstrip("#") in page.ids, f
    # each section: its plot, then its tables
    for section in html.split("<section")[1:]:
        if "<img" in section and "<table" in section:
            assert section.index("<img") < section.index("<table")
    # the markdown has the same sections in the same order, and the same findings
    assert re.findall(r"^## (.+)$", md, flags=re.M) == page.h2
    assert [line[2:].rsplit(" ([table]", 1)[0] for line in md.splitlines() if line.startswith("- ")][:len(page.findings)] \
        == [f["text"] for f in page.findings]


def test_the_page_is_one_self_contained_file(report):
    page, html, _ = report(SWEEP, BREAKDOWN)
    assert page.refs == []  # every image a data URI, every link an anchor
    assert not {"script", "link", "iframe", "object"} & page.tags
    assert "@import" not in html and "url(" not in html and "http" not in html.split("</style>")[0]
    assert 'name="viewport"' in html and "img{display:block;max-width:100%" in html


def test_throughput_is_plotted_from_zero():
    from bench.report.plots import throughput_figure

    fig = throughput_figure(load_results([SWEEP]))
    assert all(ax.get_ylim()[0] == 0 for ax in fig.axes if ax.get_visible())


@pytest.mark.slow
def test_the_example_report_fits_the_screen_in_chromium(tmp_path):
    """Opt-in: needs Debian's chromium (apt-get install chromium)."""
    from bench.report.browser import find_chromium, page_width, screenshot

    if find_chromium() is None:
        pytest.skip("no chromium on PATH: apt-get install chromium to render the report in a browser")
    build_report(load_results([SWEEP]), tmp_path, ["html"])  # the example report, as this version writes it
    page = tmp_path / "report.html"
    for width in (1300, 800):
        assert page_width(page, width) <= width  # with every fold open
    png = screenshot(page, tmp_path / "shot.png", 1300, 1600)
    import matplotlib.image as mpimg
    assert mpimg.imread(png).shape[:2] == (1600, 1300)
