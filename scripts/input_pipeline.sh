#!/usr/bin/env bash
# Real images in, measured (issue 27): (1) an offline ImageNet-like set (bench.data.imagenet_like)
# as class folders and as TFRecord shards; (2) the input pipeline's own ceiling (--mode input) for
# both sources at 224 px, 1 and 2 workers, on both backends; (3) resnet18 and resnet50 at 224 px
# training from each source and from synthetic data, with the same batch and workers as (2) so the
# report pairs each training row with its ceiling; then a report, whose Input pipeline section
# gives training / ceiling, the input wait's share of the step and the input-bound finding.
#
# Usage: bash scripts/input_pipeline.sh [OUT]          # default OUT: results/input_pipeline
# Environment: CLASSES (10), PER_CLASS (100), BATCH (16), SIZE (224), STEPS (20, training),
#              MODELS ("resnet18 resnet50"), BACKENDS (tensorflow jax), WORKERS (1 2; training uses the last)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "${1:-results/input_pipeline}"
out="$(cd "${1:-results/input_pipeline}" && pwd)"
py="$PWD/.venv/bin/python"
b="${BATCH:-16}" size="${SIZE:-224}" steps="${STEPS:-20}"
read -r -a backends <<< "${BACKENDS:-tensorflow jax}"
read -r -a workers <<< "${WORKERS:-1 2}"
train_workers="${workers[-1]}"
log() { printf '[input_pipeline] %s\n' "$*" >&2; }
# the two sources and the options each needs (the generator writes ImageNet's 1-based labels)
declare -A dir=([imagefolder]="$out/set/folders" [tfrecord]="$out/set/tfrecord")
declare -A extra=([imagefolder]="" [tfrecord]="--label-offset 1")

if [ ! -d "$out/set" ]; then
  log "(1) an ImageNet-like set: ${CLASSES:-10} classes x ${PER_CLASS:-100} images"
  "$py" -m bench.data.imagenet_like "$out/set" --classes "${CLASSES:-10}" --per-class "${PER_CLASS:-100}"
fi

log "(2) the input ceiling at $size px, batch $b, workers ${workers[*]}"
for backend in "${backends[@]}"; do
  for data in imagefolder tfrecord; do
    for w in "${workers[@]}"; do
      # shellcheck disable=SC2086 # extra holds zero or two words
      "$py" bench/run.py --mode input --backend "$backend" --data "$data" --data-dir "${dir[$data]}" ${extra[$data]} \
        --image-size "$size" --batch-size "$b" --data-workers "$w" --no-progress --output "$out/runs.csv" > /dev/null
    done
  done
done

log "(3) training at $size px from each source and from synthetic data, batch $b, $train_workers workers"
for backend in "${backends[@]}"; do
  for model in ${MODELS:-resnet18 resnet50}; do
    "$py" bench/run.py "$model" --backend "$backend" --image-size "$size" --batch-size "$b" --steps "$steps" \
      --no-progress --output "$out/runs.csv" > /dev/null
    for data in imagefolder tfrecord; do
      # shellcheck disable=SC2086
      "$py" bench/run.py "$model" --backend "$backend" --data "$data" --data-dir "${dir[$data]}" ${extra[$data]} \
        --image-size "$size" --batch-size "$b" --data-workers "$train_workers" --steps "$steps" --no-progress \
        --output "$out/runs.csv" > /dev/null
    done
  done
done

"$py" -m bench.report "$out/runs.csv" --out "$out/report" > /dev/null
log "rows: $out/runs.csv; report: $out/report/report.md"
