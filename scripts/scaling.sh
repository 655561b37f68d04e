#!/usr/bin/env bash
# Scaling and strategy-overhead figures on one machine: every strategy at 1 replica against
# single, and at 2 replicas against 1, repeated and interleaved so that drift hits every
# configuration alike. Appends rows to $OUT and prints medians over the repeats.
#   bash scripts/scaling.sh [MODEL ...]     (default: resnet18 vgg13)
#   env: OUT=results/scaling.csv WIDTH=0.25 BATCH=32 STEPS=30 REPEATS=3
# Threads are split so that processes never oversubscribe the cores: a run with P processes
# gives each $(nproc)/P intra-op threads.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-results/scaling.csv}
CORES=$(nproc)
MODELS=("${@:-resnet18}")
[ $# -eq 0 ] && MODELS=(resnet18 vgg13)
COMMON=(--width "${WIDTH:-0.25}" --batch-size "${BATCH:-32}" --steps "${STEPS:-30}" --warmup-steps 5 --no-progress --output "$OUT")
for rep in $(seq "${REPEATS:-3}"); do
  for model in "${MODELS[@]}"; do
    $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES"
    $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES" --strategy mirrored --cpu-replicas 1
    $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES" --strategy mirrored --cpu-replicas 2
    .venv/bin/horovodrun -np 1 -H localhost:1 --gloo $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES"
    .venv/bin/horovodrun -np 2 -H localhost:2 --gloo $PY bench/run.py "$model" "${COMMON[@]}" --threads $((CORES / 2))
    $PY -m launch.local_cluster -n 1 -- $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES" --strategy multiworker
    $PY -m launch.local_cluster -n 2 -- $PY bench/run.py "$model" "${COMMON[@]}" --threads $((CORES / 2)) --strategy multiworker
  done
done > /dev/null 2>&1
$PY - "$OUT" <<'PY'
import sys
from bench.results.store import read_rows
d = read_rows(sys.argv[1])
d = d[d.status == "ok"]
m = d.groupby(["model", "strategy", "replicas", "workers"], sort=False)["images_per_sec_median"].agg(["median", "count"]).reset_index()
print("| model | strategy | replicas | workers | images/sec (median of runs) | runs | vs single | scaling efficiency |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for _, r in m.iterrows():
    single = m[(m.model == r.model) & (m.strategy == "single")]["median"].iloc[0]
    one = m[(m.model == r.model) & (m.strategy == r.strategy) & (m.replicas == 1)]["median"].iloc[0]
    eff = r["median"] / (r.replicas * one)
    print(f"| {r.model} | {r.strategy} | {r.replicas} | {r.workers} | {r['median']:.1f} | {r['count']} | "
          f"{r['median'] / single:.3f} | {eff:.3f} |")
PY
