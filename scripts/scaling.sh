#!/usr/bin/env bash
# Scaling and strategy-overhead figures on one machine: every strategy at 1 replica against
# single, and at 2 replicas against 1. Appends rows to ${OUT:-results/scaling.csv}.
#   bash scripts/scaling.sh [MODEL ...]        (default: resnet18 vgg13)
# Threads are split so that processes never oversubscribe the cores: a run with P processes
# gives each $(nproc)/P intra-op threads.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-results/scaling.csv}
CORES=$(nproc)
COMMON=(--width "${WIDTH:-0.25}" --batch-size "${BATCH:-32}" --steps "${STEPS:-30}" --warmup-steps 5 --no-progress --output "$OUT")
for model in "${@:-resnet18 vgg13}"; do
  for model in $model; do
    $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES"
    $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES" --strategy mirrored --cpu-replicas 1
    $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES" --strategy mirrored --cpu-replicas 2
    .venv/bin/horovodrun -np 1 -H localhost:1 --gloo $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES"
    .venv/bin/horovodrun -np 2 -H localhost:2 --gloo $PY bench/run.py "$model" "${COMMON[@]}" --threads $((CORES / 2))
    $PY -m launch.local_cluster -n 1 -- $PY bench/run.py "$model" "${COMMON[@]}" --threads "$CORES" --strategy multiworker
    $PY -m launch.local_cluster -n 2 -- $PY bench/run.py "$model" "${COMMON[@]}" --threads $((CORES / 2)) --strategy multiworker
  done
done
$PY - "$OUT" <<'PY'
import sys
from bench.results import read_rows
d = read_rows(sys.argv[1])
d = d[d.status == "ok"]
cols = ["model", "strategy", "workers", "replicas", "global_batch", "images_per_sec", "images_per_sec_ci95_low",
        "images_per_sec_ci95_high"]
print(d[cols].to_string(index=False))
PY
