#!/usr/bin/env bash
# cnnbench against tf_cnn_benchmarks (tensorflow/benchmarks, last commit 8fb7907), side by side.
#
# Usage: bash scripts/compare_tf_cnn.sh PEER_DIR [--models resnet50,vgg16] [--pairs 3] [--append CSV]
#   PEER_DIR   your checkout of github.com/tensorflow/benchmarks (or its scripts/tf_cnn_benchmarks);
#              cnnbench ships none
# Environment:
#   CNNBENCH_PEER_VENV  the peer's side venv (default: .venv-peer in the repo), built once:
#                       TensorFlow 2.21 (CPU) and tf-keras 2.21 installed with --no-deps, run with
#                       TF_USE_LEGACY_KERAS=1. Needs nothing beyond the package index.
#   CNNBENCH_PYTHON     cnnbench's own python (default: the repo's .venv, from bash scripts/setup.sh)
# Every argument is checked before the side venv is built. See bench/lab/peer.py for what is matched.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="bash scripts/compare_tf_cnn.sh PEER_DIR [--models resnet50,vgg16] [--pairs N] [--append CSV]"
case "${1:-}" in -h|--help) echo "usage: $usage"; exit 0;; esac
[ $# -ge 1 ] || { echo "error: give PEER_DIR, a checkout of tensorflow/benchmarks. Usage: $usage" >&2; exit 2; }
peer_dir="$1"; shift
[ -d "$peer_dir" ] || { echo "error: PEER_DIR is not a folder. Received: $peer_dir" >&2; exit 2; }
py="${CNNBENCH_PYTHON:-$repo/.venv/bin/python}"
[ -x "$py" ] || { echo "error: no cnnbench python at $py: run bash scripts/setup.sh first" >&2; exit 2; }
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
# the folder's script, the models, --pairs, --append: all refused here, before anything is downloaded
"$py" -m bench.lab.peer --check --peer-dir "$peer_dir" "$@" || exit $?
side="${CNNBENCH_PEER_VENV:-$repo/.venv-peer}"
if [ ! -x "$side/bin/python" ] || ! "$side/bin/python" -c "import tf_keras" 2>/dev/null; then
  echo "[compare] building the peer's side venv in $side (TensorFlow 2.21, tf-keras with --no-deps)" >&2
  "$(command -v python3.11 || command -v python3)" -m venv "$side"
  "$side/bin/python" -m pip install -q --upgrade pip
  "$side/bin/python" -m pip install -q "tensorflow-cpu==2.21.*"
  "$side/bin/python" -m pip install -q --no-deps "tf-keras==2.21.*"
fi
exec "$py" -m bench.lab.peer --peer-dir "$peer_dir" --peer-python "$side/bin/python" "$@"
