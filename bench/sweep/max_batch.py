"""`python -m bench.sweep --find-max-batch`: the largest per-replica batch that fits, for each model,
strategy, worker count and backend of the grid.

The search doubles the batch from the run's default (bench.config.schema.RunConfig.resolved) until a probe does
not fit, then bisects between the largest batch that fit and the smallest that did not, down
to a gap of one (or of `--batch-granularity`, whose multiples it then probes). Each probe is one sweep configuration in its own child, and leaves its row.
A probe does not fit when it ran out of memory (`oom`), when its memory estimate already
exceeded what was available (`oom_predicted`), or, under `--memory-cap-gb`, when its measured
peak exceeded the cap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.config.key import config_key
from bench.config.schema import schema
from bench.errors import Status
from bench.measure.memory import NO_FIT_STATUSES, fits
from bench.measure.probes import GiB, gib
from bench.sweep.children import run_job

LIMIT = int(schema()["batch_size"].hi)


def search(fit: Callable[[int], bool], start: int, limit: int = LIMIT, step: int = 1
           ) -> tuple[int | None, int | None]:
    """(largest batch that fit, smallest batch above it that did not) by doubling from `start`
    (or halving, if `start` does not fit), then bisection until the two are `step` apart or
    less (bisection probes multiples of `step`). The second is None when `limit` fit; the first
    is None when not even batch 1 fit. Each batch is probed at most once."""
    seen: dict[int, bool] = {}

    def ok(b: int) -> bool:
        if b not in seen:
            seen[b] = bool(fit(b))
        return seen[b]

    lo: int | None = start if ok(start) else None
    hi: int | None = None if lo is not None else start
    while lo is not None and hi is None and lo < limit:
        b = min(2 * lo, limit)
        lo, hi = (b, None) if ok(b) else (lo, b)
    while lo is None and hi > 1:
        b = hi // 2
        lo, hi = (b, hi) if ok(b) else (None, b)
    while lo is not None and hi is not None and hi - lo > step:
        mid = (lo + hi) // 2
        b = max(lo + step, mid - mid % step)  # < hi, since the gap is wider than one step
        lo, hi = (b, hi) if ok(b) else (lo, b)
    return lo, hi


@dataclass
class Result:
    """One search: its probes' rows by per-replica batch, and what they found."""
    label: str
    cap_gb: float | None
    probes: dict[int, dict[str, Any]] = field(default_factory=dict)
    largest: int | None = None
    first_misfit: int | None = None

    def why(self, per_replica_batch: int) -> str:
        """Why a probe did not fit, in words."""
        row = self.probes[per_replica_batch]
        if row.get("status") != Status.OK:
            return f"{row.get('status')}: {str(row.get('error', ''))[:160]}"
        return f"peak {float(row['peak_mem_bytes']) / GiB:.2f} GiB > cap {self.cap_gb:g} GiB"

    def line(self) -> str:
        if self.largest is None:
            first = min(self.probes)
            return f"{self.label}: nothing fits (batch {first}: {self.why(first)})"
        best = self.probes[self.largest]
        text = (f"{self.label}: largest batch that fits {self.largest}, {float(best['images_per_sec']):.1f} "
                f"images/sec, peak {gib(best.get('peak_mem_bytes'))}")
        if self.first_misfit is not None:
            text += f"; batch {self.first_misfit} does not fit ({self.why(self.first_misfit)})"
        else:
            text += f"; the largest batch allowed ({LIMIT}) fit"
        return text


def run(groups: list, *, output: str, timeout: float, rows, force: bool, cap_gb: float | None,
        log_dir: Path, step: int = 1, say: Callable[[str], None] = print, results: list[Result] | None = None,
        notes: list[str] | None = None) -> list[Result]:
    """Search each group (a sweep Job at the start batch, its configuration that of every probe
    but the batch: its command line is the first probe's). A probe whose configuration already
    has a row that answers the question (ok, oom or oom_predicted) is not run again, unless
    `force`. Each finished search is appended to `results` as it ends, so a caller stopped
    half-way (Ctrl-C, an unwritable CSV) still has them; `notes` as in sweep.run_job."""

    known: dict[tuple, dict[str, Any]] = {}
    if rows is not None and not rows.empty and not force:
        answered = rows[rows["status"].isin([Status.OK, *NO_FIT_STATUSES])]
        for r in answered.sort_values("timestamp_utc", kind="stable").to_dict("records"):
            known[config_key(r)] = r
    results = [] if results is None else results
    for g in groups:
        result = Result(g.group_label, cap_gb)

        def fit(per_replica_batch: int, g=g, result=result) -> bool:
            job = g.at_batch(per_replica_batch)
            row = known.get(job.key())
            reused = row is not None
            if row is None:
                row = run_job(job, output, timeout, log_dir, notes)
            result.probes[per_replica_batch] = row
            verdict = bool(fits(row, cap_gb))
            what = (f"{float(row['images_per_sec']):.1f} images/sec, peak {gib(row.get('peak_mem_bytes'))}"
                    if row.get("status") == Status.OK else str(row.get("error", ""))[:160])
            say(f"  probe {result.label} batch {per_replica_batch}: {row.get('status')} ({what}): "
                f"{'fits' if verdict else 'does not fit'}{' [row reused]' if reused else ''}")
            return verdict

        result.largest, result.first_misfit = search(fit, g.per_replica_batch, step=step)
        say(result.line())
        results.append(result)
    return results


def summary(results: list[Result], output: str) -> str:
    cap = results[0].cap_gb if results else None
    head = f"max batch search{f' (memory cap {cap:g} GiB)' if cap else ''}: rows in {output}"
    return "\n".join(["", head, *(r.line() for r in results)])
