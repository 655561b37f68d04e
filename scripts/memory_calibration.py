"""Calibrate the memory estimate against the process's measured peak.

    python scripts/memory_calibration.py run DIR [--models a,b] [--backends tensorflow,jax]
                                              [--modes train,inference] [--deadline HH:MM]
    python scripts/memory_calibration.py table DIR

Run it with the project's python (`.venv/bin/python`, where scripts/setup.sh installed cnnbench),
or with PYTHONPATH=. from the repo root.

`run` runs every point (model x backend x mode x 3 batch sizes, width 0.125, 32x32 synthetic
data; training 2 timed steps after 1 warmup, inference the 100 it needs at least) as its own process of `bench/run.py --output DIR/points.csv`,
one at a time, skipping points already in DIR/points.jsonl (so it resumes) and stopping at the
deadline (UTC). The batch sizes come from the layer walk: the largest makes the estimated
activations about ACT_TARGET (and its step at most FLOP_CAP, or INFERENCE_FLOP_CAP), the others
are a quarter and a sixteenth of it, so the top training point is dominated by activations
(where the FLOP cap allows) and the bottom one by the process's baseline. Beside each row, the parent notes the child's ru_maxrss from wait4 as a cross-check.

`table` prints a markdown table from the rows: both peaks, the estimate recomputed with the
current bench.memory, and measured / estimate (process peak over the estimate), which must
stay <= 1 at every point.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WIDTH = 0.125
ACT_TARGET = 1.25 * 2**30   # estimated activations at the top batch
FLOP_CAP = 60e9             # forward+backward FLOPs of one top-batch step (a few seconds on 2 cores)
INFERENCE_FLOP_CAP = 4e9    # an inference run times 100 steps (its p99 needs them): a fraction of a second each
MAX_BATCH = 16384
PRIORITY = ["resnet18", "vgg13", "densenet121", "googlenet", "alexnet", "lenet5"]
STEPS = {"train": ["--steps", "2", "--warmup-steps", "1"], "inference": ["--steps", "100", "--warmup-steps", "1"]}
RUN_TIMEOUT_S = 420
# Beyond the grid: the oversize case at its one size that fits here, and full-width points
# where the weights and optimizer state, not activations, are most of the footprint.
EXTRA = [("vgg13", "tensorflow", "train", 16384, 0.125), ("alexnet", "tensorflow", "train", 16, 1.0),
         ("alexnet", "jax", "train", 16, 1.0), ("alexnet", "tensorflow", "inference", 16, 1.0),
         ("alexnet", "jax", "inference", 16, 1.0)]


def _plan(models: list[str]) -> dict:
    """{model: {mode: [b1, b2, b3]}} from each model's layer walk (imports Keras: done in a child)."""
    code = f"""
import json, os
os.environ.setdefault('KERAS_BACKEND', 'jax')
import models
from bench.measure.memory import COMPUTE_BYTES
out = {{}}
for name in {models!r}:
    d = models.describe(name, width={WIDTH})
    acts = sum(__import__('math').prod(l.output_shape) for l in d.layers) * COMPUTE_BYTES['fp32']
    widest = max(__import__('math').prod(l.output_shape) for l in d.layers) * COMPUTE_BYTES['fp32']
    out[name] = {{}}
    for mode, per_image, cap in (('train', acts, {FLOP_CAP} / 3), ('inference', 3 * widest, {INFERENCE_FLOP_CAP})):
        top = min({MAX_BATCH}, {ACT_TARGET} / per_image, cap / max(d.flops, 1))
        top = 2 ** max(4, int(__import__('math').log2(max(top, 16))))
        out[name][mode] = [top // 16 if top >= 64 else max(1, top // 16), top // 4, top]
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    if r.returncode != 0:
        sys.exit(f"error: could not plan the batch sizes: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _run_one(cmd: list[str], timeout: float) -> tuple[int, int, float]:
    """(exit status, the child's ru_maxrss in bytes from wait4, seconds)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    killer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0,):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        print(f"    rc {p.returncode}: {tail[0][:300]}", flush=True)
    return p.returncode, usage.ru_maxrss * 1024, time.time() - t0


def run(args: argparse.Namespace) -> int:
    import models as registry

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",") if args.models else \
        PRIORITY + [m for m in registry.list_models() if m not in PRIORITY]
    plan_file = out / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    log = out / "points.jsonl"
    done = set()
    if log.exists():
        for line in log.read_text().splitlines():
            p = json.loads(line)
            done.add((p["model"], p["backend"], p["mode"], p["batch"], p.get("width", WIDTH)))
    deadline = None
    if args.deadline:
        hh, mm = map(int, args.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    def points():
        if args.extra:
            yield from EXTRA
            return
        for model in names:
            if model not in plan:  # planned lazily: describing every model takes minutes
                plan.update(_plan([model]))
                plan_file.write_text(json.dumps(plan, indent=1))
            for backend in args.backends.split(","):
                for mode in args.modes.split(","):
                    for batch in plan[model][mode]:
                        yield model, backend, mode, batch, WIDTH

    for key in points():
        model, backend, mode, batch, width = key
        if key in done:
            continue
        if deadline and dt.datetime.now(dt.timezone.utc) >= deadline:
            print("deadline reached; stopping", flush=True)
            return 0
        cmd = [sys.executable, "bench/run.py", model, "--backend", backend, "--mode", mode,
               "--width", str(width), "--batch-size", str(batch), *STEPS[mode], "--no-progress",
               "--output", str(out / "points.csv")]
        print(f"{dt.datetime.now(dt.timezone.utc):%H:%M:%S} {model} {backend} {mode} {batch} width {width}", flush=True)
        rc, maxrss, secs = _run_one(cmd, RUN_TIMEOUT_S)
        with log.open("a") as f:
            f.write(json.dumps({"model": model, "backend": backend, "mode": mode, "batch": batch, "width": width,
                                "rc": rc, "wait4_maxrss": maxrss, "seconds": round(secs, 1)}) + "\n")
    return 0


def table(args: argparse.Namespace) -> int:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import models
    from bench.backends import implementation
    from bench.config.schema import RunConfig
    from bench.measure.memory import estimate
    from bench.results.store import read_rows

    out = Path(args.dir)
    rows = read_rows(out / "points.csv")
    points = [json.loads(l) for l in (out / "points.jsonl").read_text().splitlines()]
    wait4 = {(p["model"], p["backend"], p["mode"], p["batch"], p.get("width", WIDTH)): p for p in points}
    descs: dict = {}
    mib = 2**20
    print("| model | width | backend | mode | batch | timed-steps peak MiB | process peak MiB | wait4 maxrss MiB "
          "| estimate MiB | process peak / estimate |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    worst, best, failed = 0.0, float("inf"), []
    for _, r in rows.iterrows():
        key = (r["model"], r["backend"], r["mode"], int(r["batch_size"]), float(r["width"]))
        if r["status"] != "ok":
            failed.append(f"{key}: {r['status']} {r['error']}")
            continue
        if key[::4] not in descs:
            descs[key[::4]] = models.describe(r["model"], width=float(r["width"]))
        cfg = RunConfig(model=r["model"], backend=r["backend"], mode=r["mode"], batch_size=int(r["batch_size"]),
                        width=float(r["width"]), precision=r["precision"], optimizer=r["optimizer"],
                        momentum=float(r["momentum"]) if r["momentum"] == r["momentum"] else 0.0)
        est = estimate(descs[key[::4]], cfg, implementation(cfg.backend).MEMORY[cfg.mode]).total_bytes
        ratio = r["process_peak_mem_bytes"] / est
        worst, best = max(worst, ratio), min(best, ratio)
        w4 = wait4.get(key, {}).get("wait4_maxrss")
        print(f"| {key[0]} | {key[4]:g} | {key[1]} | {key[2]} | {key[3]} | {r['peak_mem_bytes'] / mib:,.0f} "
              f"| {r['process_peak_mem_bytes'] / mib:,.0f} | {w4 / mib if w4 else float('nan'):,.0f} "
              f"| {est / mib:,.0f} | {ratio:.2f} |")
    print(f"\n{len(rows) - len(failed)} points; process peak / estimate from {best:.2f} to {worst:.2f}")
    for f in failed:
        print(f"not ok: {f}")
    return 0 if worst <= 1 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("--models", default="")
    r.add_argument("--backends", default="tensorflow,jax")
    r.add_argument("--modes", default="train,inference")
    r.add_argument("--deadline", default="", help="HH:MM UTC: start no point after it")
    r.add_argument("--extra", action="store_true", help="the EXTRA points instead of the grid")
    t = sub.add_parser("table")
    t.add_argument("dir")
    args = ap.parse_args()
    return run(args) if args.cmd == "run" else table(args)


if __name__ == "__main__":
    sys.exit(main())
