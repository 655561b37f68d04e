#!/usr/bin/env bash
# The prepared GPU check (bench/lab/gpu_check.py) on a machine with a GPU, JAX and no TensorFlow,
# with no network: Keras and its pure-Python dependencies come from a local wheel folder when
# they are missing. Fill that folder where pip works (see docs/backends.md):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl keras==3.15.1 namex optree absl-py rich packaging typing-extensions
#
# Usage: bash scripts/gpu_check.sh [--peak-tflops 989] [--models ...] [--batch-sizes ...] [--budget-s 330]
# Environment: WHEELS (default .whl in the repo), PYTHON (default python3).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels="${WHEELS:-$repo/.whl}"
py="${PYTHON:-python3}"
cd "$repo"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1  # before Keras is first imported: no TensorFlow here
"$py" -c 'import jax' 2>/dev/null || { echo "gpu_check: JAX is not installed for $py" >&2; exit 2; }
if ! "$py" -c 'import keras, namex, optree' 2>/dev/null; then
  ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "gpu_check: Keras is missing and $wheels holds no wheels" >&2; exit 2; }
  site="$(mktemp -d)"
  "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$py" -m bench.lab.gpu_check "$@"
