"""A report in a real browser: headless Chromium (Debian's `chromium` package) renders
report.html to a PNG, and measures how wide the page lays out at a given viewport width.

    python -m bench.report.browser results/report/report.html --png shot.png [--width 1300] [--height 2400]

Nothing here is needed to write a report; it shows one working, and tests that it fits the screen.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.errors import ExitCode

NAMES = ("chromium", "chromium-browser", "google-chrome")
# headless and offline: without the networking flags Chromium keeps dialling Google's hosts,
# which this machine's closed network refuses
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1"]
TIMEOUT_S = 90
# appended to a copy of the page only: the report itself carries no script
_MEASURE = ("<script>document.querySelectorAll('details').forEach(d=>d.open=true);"
            "document.title='scrollWidth='+Math.max(document.documentElement.scrollWidth,"
            "document.body.scrollWidth);</script>")


def find_chromium() -> str | None:
    """The path of a Chromium binary on PATH, or None."""
    return next((p for p in map(shutil.which, NAMES) if p), None)


def _run(args: list[str], profile: str) -> str:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError(f"no Chromium on PATH (looked for {', '.join(NAMES)})")
    done = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def screenshot(page: Path, png: Path, width: int = 1300, height: int = 2400) -> Path:
    """Render `page` at width x height CSS pixels into `png`."""
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as profile:
        _run([f"--window-size={width},{height}", f"--screenshot={png}", Path(page).resolve().as_uri()], profile)
    return png


def page_width(page: Path, width: int) -> int:
    """How wide `page` lays out, in CSS pixels, in a viewport `width` pixels wide, with every
    <details> fold open."""
    page = Path(page)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
        dom = _run([f"--window-size={width},900", "--dump-dom", copy.as_uri()], str(Path(tmp) / "profile"))
    found = re.search(r"scrollWidth=(\d+)", dom)
    if not found:
        raise RuntimeError("the page did not report its width")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report.browser", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("page")
    p.add_argument("--png", required=True)
    p.add_argument("--width", type=int, default=1300)
    p.add_argument("--height", type=int, default=2400)
    args = p.parse_args(argv)
    if find_chromium() is None:
        print(f"error: no Chromium on PATH (looked for {', '.join(NAMES)}); on Debian: apt-get install chromium",
              file=sys.stderr)
        return ExitCode.INPUT
    print(screenshot(Path(args.page), Path(args.png), args.width, args.height))
    print(f"laid out {page_width(Path(args.page), args.width)} px wide in a {args.width} px viewport")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
