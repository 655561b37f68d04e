"""Predictions checked against measurements: every measured distributed training row is predicted
from its own inputs (its --no-gradient-sync twin, else a one-replica row of the same compute, and
the collective series measured at the same place: strategy, backend, transport, hosts and link),
and its measured median step set beside the predicted band, with what the run's own step says of
overlap: the step above its compute (exposed) against the predicted all-reduce."""
from __future__ import annotations

from typing import Any

import pandas as pd

from bench.config.key import TOPOLOGY_KEY
from bench.config.schema import KEY_FIELDS
from bench.errors import BenchInputError, Status
from bench.predict import inputs
from bench.predict.model import Fabric, predict_point

SYNC_AT = [*KEY_FIELDS, *TOPOLOGY_KEY].index("gradient_sync")


def _without_sync(key: tuple) -> tuple:
    return key[:SYNC_AT] + key[SYNC_AT + 1:]


def _place(r: Any) -> str:
    hosts = int(r["hosts"]) if pd.notna(r.get("hosts")) else 1
    if hosts == 1:
        return "one host"
    return f"{hosts} hosts, " + ("unshaped" if pd.isna(r.get("link_gbps")) else f"{r['link_gbps']:g} Gbit/s")


def _compute(r: pd.Series, runs: pd.DataFrame, twins: dict[tuple, pd.Series]) -> tuple[pd.Series, str]:
    twin = twins.get(_without_sync(r["config_key"]))
    if twin is not None:
        return twin, "its unsynced twin"
    wanted = {**{f: r.get(f) for f in inputs.COMPUTE_FIELDS}, "cores_per_replica": r.get("cores_per_replica"),
              "device_kind": r.get("device_kind")}
    one = inputs.compute_row(runs[runs["replicas"] == 1], r["model"], wanted, None)
    return one, "a one-replica row"


def _series(r: pd.Series, coll: pd.DataFrame) -> pd.DataFrame:
    transport = r.get("transport") if isinstance(r.get("transport"), str) and r.get("transport") else None
    wanted = {"strategy": r["strategy"], "backend": r["backend"], "transport": transport,
              "hosts": int(r["hosts"]) if pd.notna(r.get("hosts")) else 1,
              "link_gbps": r.get("link_gbps") if pd.notna(r.get("link_gbps")) else None,
              "dtype": "fp16" if r.get("hvd_compression") == "fp16" else "fp32",
              "cores_per_replica": r.get("cores_per_replica")}
    try:
        return inputs.series(coll, {**wanted, "ranks": int(r["replicas"])}, "its place")
    except BenchInputError:
        return inputs.series(coll, wanted, "its place")


def validation_table(runs: pd.DataFrame, coll: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One line per measured synced training row of 2 or more replicas that has the inputs of a
    prediction; the others, each with why, in the second value."""
    cols = ["model", "strategy", "backend", "transport", "place", "replicas", "batch_size", "measured_ms",
            "measured_ci95", "compute_ms", "compute_from", "allreduce_ms", "fit_rms", "band_low_ms", "midpoint_ms",
            "band_high_ms", "midpoint_error", "inside", "exposed_ms", "overlap"]
    out: list[dict] = []
    skipped: list[str] = []
    if not len(runs):
        return pd.DataFrame(columns=cols), skipped
    ok = runs[(runs["status"] == Status.OK) & (runs["mode"] == "train")].sort_values("timestamp_utc", kind="stable")
    unsynced = ok["gradient_sync"].astype(object).eq(False)
    twins = {_without_sync(k): r for k, (_, r) in zip(ok.loc[unsynced, "config_key"], ok[unsynced].iterrows())}
    measured = ok[~unsynced & (ok["replicas"] >= 2)].drop_duplicates("config_key", keep="last")
    for _, r in measured.iterrows():
        what = f"{r['model']} {r['strategy']}/{r['backend']} x{int(r['replicas'])} on {_place(r)} (run {r['run_id']})"
        try:
            row, how = _compute(r, runs, twins)
            link_rows = _series(r, coll) if len(coll) else None
            if link_rows is None:
                raise BenchInputError("no collective rows were given")
            link = inputs.link_from_series(link_rows)
        except BenchInputError as e:
            skipped.append(f"{what}: {e}")
            continue
        hosts = int(r["hosts"]) if pd.notna(r.get("hosts")) else 1
        n = int(r["replicas"])
        if hosts > 1 and n != hosts:
            skipped.append(f"{what}: {n // hosts} replicas per host need the link within a host as well")
            continue
        fabric = Fabric(1, link, None) if hosts > 1 else Fabric(n, None, link)
        algorithm = "hierarchical" if bool(r.get("hvd_hierarchical")) and fabric.gpus_per_node > 1 and hosts > 1 \
            else "ring"
        compute = inputs.compute_from_row(row, runs)
        grad, _ = inputs.gradient_bytes({f: r.get(f) for f in inputs.COMPUTE_FIELDS}, r,
                                        str(r.get("hvd_compression") or "none"))
        p = predict_point(compute, fabric, grad, n, algorithm, int(r["batch_size"]))
        step = float(r["step_time_median_s"])
        lo, hi = r.get("step_time_median_ci95_low_s"), r.get("step_time_median_ci95_high_s")
        transport = r.get("transport") if isinstance(r.get("transport"), str) else ""
        out.append({"model": f"{r['model']} w{r['width']:g}", "strategy": r["strategy"], "backend": r["backend"],
                    "transport": transport, "place": _place(r), "replicas": n, "batch_size": int(r["batch_size"]),
                    "measured_ms": 1e3 * step,
                    "measured_ci95": f"[{1e3 * lo:.4g}, {1e3 * hi:.4g}]" if pd.notna(lo) and pd.notna(hi) else "",
                    "compute_ms": 1e3 * compute.step_s, "compute_from": how, "allreduce_ms": 1e3 * p.allreduce_s,
                    "fit_rms": link.fit_rms, "band_low_ms": 1e3 * p.step_low_s, "midpoint_ms": 1e3 * p.step_s,
                    "band_high_ms": 1e3 * p.step_high_s, "midpoint_error": p.step_s / step - 1,
                    "inside": "yes" if p.step_low_s <= step <= p.step_high_s else "no",
                    # what the run itself did: the step above its compute, and the share of the
                    # all-reduce that this hid (0: none, as the band's high edge assumes)
                    "exposed_ms": 1e3 * (step - compute.step_s),
                    "overlap": 1 - (step - compute.step_s) / p.allreduce_s if p.allreduce_s > 0 else float("nan")})
    return pd.DataFrame(out, columns=cols), skipped
