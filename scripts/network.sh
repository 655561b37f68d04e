#!/usr/bin/env bash
# What the network costs, measured: all-reduce bus bandwidth against message size for each
# strategy's own all-reduce (Horovod over Gloo and over MPI, tf.distribute's multiworker, JAX),
# on loopback and across 2 emulated hosts (launch.hosts) at each link rate; then training runs
# across the hosts with and without gradient sync (the exposed communication, as sweep
# --breakdown measures it), a report of it all, and each training run's predicted step beside its
# measured one (cnnbench predict --validate, into OUT/validation.md).
#
# Usage (root; after `bash scripts/setup.sh --cluster`):
#   bash scripts/network.sh [OUT]              # default OUT: results/network
# Environment:
#   LINKS       link rates to measure across the hosts (default "100mbit 1gbit none")
#   MAX_BYTES   the largest all-reduce message (default 16M; 100 Mbit/s carries 16 MiB in 1.3 s)
#   MODELS      "model:width ..." trained across the hosts (default "resnet18:0.5 vgg13:0.5")
#   STRATEGIES  what trains across them (default "horovod multiworker")
#   STEPS       timed steps per training run (default 8)
# Every run appends to OUT/collectives.csv or OUT/runs.csv; the report goes to OUT/report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "${1:-results/network}"
out="$(cd "${1:-results/network}" && pwd)"
py="$PWD/.venv/bin/python"
hvd="$PWD/.venv/bin/horovodrun"
links=(${LINKS:-100mbit 1gbit none})
models=(${MODELS:-resnet18:0.5 vgg13:0.5})
strategies=(${STRATEGIES:-horovod multiworker})
steps="${STEPS:-8}"
coll=(-m bench.collectives --min-bytes 1K --max-bytes "${MAX_BYTES:-16M}" --dtypes fp32 --iters 10
      --warmup-iters 2 --budget-s 3 --output "$out/collectives.csv")
log() { printf '[network] %s\n' "$*" >&2; }
mpi_built() { "$py" -c 'import horovod.tensorflow as h, sys; sys.exit(0 if h.mpi_built() else 1)' 2>/dev/null; }
# Open MPI as root asks for these two; its TCP transport and launch agent use the hosts' eth0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# (1) loopback: 2 ranks on this machine, sharing its cores
log "loopback: collectives"
"$hvd" -np 2 -H localhost:2 --gloo "$py" "${coll[@]}"
if mpi_built && command -v mpirun >/dev/null; then
  mpirun -np 2 -x PATH -x PYTHONPATH "$py" "${coll[@]}" --strategy horovod
fi
"$py" -m launch.local_cluster -n 2 -- "$py" "${coll[@]}" --strategy multiworker
"$py" -m launch.local_cluster -n 2 -- "$py" "${coll[@]}" --strategy multiworker --backend jax

# (2) two hosts, one core each, at each link rate
trap '"$py" -m launch.hosts down >/dev/null 2>&1 || true' EXIT
for link in "${links[@]}"; do
  log "2 hosts at $link: collectives"
  "$py" -m launch.hosts up -n 2 --link "$link" >/dev/null
  on_h0=("$py" -m launch.hosts exec h0 --)
  "${on_h0[@]}" "$hvd" -np 2 -H h0:1,h1:1 --gloo "$py" "${coll[@]}"
  if mpi_built && command -v mpirun >/dev/null; then
    "${on_h0[@]}" mpirun -np 2 -H h0,h1 --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 \
      -x PATH -x PYTHONPATH "$py" "${coll[@]}" --strategy horovod
  fi
  "$py" -m launch.local_cluster -n 2 --on-hosts -- "$py" "${coll[@]}" --strategy multiworker
  "$py" -m launch.local_cluster -n 2 --on-hosts -- "$py" "${coll[@]}" --strategy multiworker --backend jax
  for mw in "${models[@]}"; do
    model="${mw%%:*}" width="${mw##*:}"
    for strategy in "${strategies[@]}"; do
      for sync in --gradient-sync --no-gradient-sync; do
        log "2 hosts at $link: $model width $width, $strategy $sync"
        run=("$py" "$PWD/bench/run.py" "$model" --width "$width" --batch-size 16 --steps "$steps" --warmup-steps 2
             --no-progress "$sync" --output "$out/runs.csv")
        if [ "$strategy" = horovod ]; then
          "${on_h0[@]}" "$hvd" -np 2 -H h0:1,h1:1 --gloo "${run[@]}" || log "failed: see the row"
        else
          "$py" -m launch.local_cluster -n 2 --on-hosts -- "${run[@]}" --strategy multiworker || log "failed: see the row"
        fi
      done
    done
  done
  "$py" -m launch.hosts down >/dev/null
done

log "report"
"$py" -m bench.report "$out/collectives.csv" "$out/runs.csv" --out "$out/report"
# each synced run predicted from its unsynced twin and the collective rows of its link (docs/predictions.md)
log "predictions against the measured runs"
"$py" -m bench.predict --validate --rows "$out/runs.csv" "$out/collectives.csv" | tee "$out/validation.md"
