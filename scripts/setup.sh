#!/usr/bin/env bash
# Set up cnnbench from nothing: .venv, the project with its dependencies, and Horovod 0.28.1
# built from source against TensorFlow 2.21 (with the one patch it needs), cached as a wheel.
#
# Usage: bash scripts/setup.sh [--gpu] [--cluster]
#   Installs cnnbench editable with two extras: one framework build and the test tools (pytest,
#   pytest-benchmark, hypothesis,
#   mlperf-logging for --mllog), so that both README commands work after it.
#   default          extra "cpu": tensorflow-cpu and jax[cpu]
#   --gpu            extra "gpu": tensorflow[and-cuda] and jax[cuda12] (both use the CUDA 12 wheels)
#   --cluster        first the Debian packages the cluster paths need (CLUSTER_PACKAGES below: Open
#                    MPI, Slurm, munge, sshd, iproute2), as root with apt-get; skipped where their
#                    commands are all present already. A non-root user asks an administrator for
#                    `apt-get install` of those packages, then runs setup without --cluster.
#   pip cannot make two extras exclusive, so this script removes the other build first: one
#   environment holds one of them.
# Environment:
#   CNNBENCH_VENV    where the venv goes (default: .venv in the repo)
#   CNNBENCH_CACHE   where the built Horovod wheel is cached (default: ~/.cache/cnnbench)
#   CNNBENCH_INSTALLER  uv (default) or pip: what installs cnnbench and its dependencies. uv is
#                    installed into the venv with pip; where it cannot be had or fails, pip does it.
#   PYTHON           the interpreter to build the venv from (default: python3.11, else python3)
#   HOROVOD_*        passed through to Horovod's build; defaults below give a CPU build with
#                    Gloo, and with MPI too where Open MPI's `mpicxx` is found (HOROVOD_WITHOUT_MPI=1
#                    otherwise). An explicit HOROVOD_WITH_MPI / HOROVOD_WITHOUT_MPI is kept. On a GPU
#                    cluster set e.g. HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_WITH_MPI=1.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CNNBENCH_VENV:-$repo/.venv}"
cache="${CNNBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cnnbench}"
hvd_version="0.28.1"
build="cpu"
cluster=0
for arg in "$@"; do
  case "$arg" in
    --gpu) build="gpu" ;;
    --cluster) cluster=1 ;;
    *) printf '[setup] ERROR: unknown option %s (usage: bash scripts/setup.sh [--gpu] [--cluster])\n' "$arg" >&2; exit 2 ;;
  esac
done
case "${CNNBENCH_INSTALLER:-uv}" in
  uv|pip) ;;
  *) printf '[setup] ERROR: CNNBENCH_INSTALLER must be uv or pip, not %s\n' "$CNNBENCH_INSTALLER" >&2; exit 2 ;;
esac

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
run_logged() { # run a step quietly; on failure show the tail of its log and stop
  local name="$1"; shift
  local logf="$cache/logs/$name.log"
  mkdir -p "$cache/logs"
  if ! "$@" >"$logf" 2>&1; then
    printf '[setup] ERROR: step "%s" failed: %s\n--- last 40 lines of %s ---\n' "$name" "$*" "$logf" >&2
    tail -n 40 "$logf" >&2
    exit 1
  fi
}

# ---- the cluster paths' system packages (--cluster) ---------------------------------------
# Debian's: Open MPI 4.1 (mpirun, and mpicxx for Horovod's MPI build), Slurm 22.05 with munge,
# an sshd for the emulated hosts, iproute2 (ip, tc) for their namespaces and links.
CLUSTER_PACKAGES=(openmpi-bin libopenmpi-dev slurmctld slurmd slurm-client munge openssh-server openssh-client iproute2)
CLUSTER_COMMANDS=(mpirun mpicxx slurmctld slurmd sbatch munged sshd ip tc)
if [ "$cluster" = 1 ]; then
  absent=()
  for c in "${CLUSTER_COMMANDS[@]}"; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || absent+=("$c")
  done
  if [ "${#absent[@]}" -eq 0 ]; then
    log "cluster packages present (${CLUSTER_COMMANDS[*]})"
  elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "--cluster installs Debian packages, which needs root and apt-get (missing: ${absent[*]}); ask an administrator for: apt-get install ${CLUSTER_PACKAGES[*]}"
  else
    log "installing ${CLUSTER_PACKAGES[*]} with apt-get (missing: ${absent[*]})"
    mkdir -p "$cache/logs"
    run_logged apt-update apt-get update -q
    DEBIAN_FRONTEND=noninteractive run_logged apt-install apt-get install -y -q --no-install-recommends "${CLUSTER_PACKAGES[@]}"
  fi
fi

py="${PYTHON:-}"
if [ -z "$py" ]; then
  py="$(command -v python3.11 || command -v python3 || true)"
fi
[ -n "$py" ] || die "no python3 found; install Python 3.11"
"$py" -c 'import sys; assert sys.version_info[:2] >= (3, 10)' 2>/dev/null \
  || die "Python >= 3.10 needed, $py is $("$py" --version 2>&1)"

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  run_logged venv "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"
run_logged pip-upgrade "$vpy" -m pip install -q --upgrade pip setuptools wheel

# The other build's distributions, where an earlier run installed them: tensorflow-cpu and
# tensorflow write the same `tensorflow` module, and JAX's CUDA plugins would load under jax[cpu].
if [ "$build" = gpu ]; then other=(tensorflow-cpu); else other=(tensorflow jax-cuda12-plugin jax-cuda12-pjrt); fi
present=($("$vpy" -m pip show "${other[@]}" 2>/dev/null | sed -n 's/^Name: //p' || true))
if [ "${#present[@]}" -gt 0 ]; then
  log "removing ${present[*]} (the other framework build)"
  run_logged uninstall-other "$vpy" -m pip uninstall -y -q "${present[@]}"
fi

log "installing cnnbench[$build,test] and its dependencies (TensorFlow, JAX, pandas, pytest, ...)"
# uv installs the same requirements from its warm cache in seconds where pip takes minutes: it
# links the unpacked wheels from its cache instead of unpacking each again (measured:
# docs/measurements/2026-12-02-setup-timing.md). It reads neither pip.conf nor PIP_*, so it is
# given pip's indexes, find-links and constraints as flags.
uv_install() {
  [ "${CNNBENCH_INSTALLER:-uv}" = uv ] || return 1
  [ -x "$venv/bin/uv" ] || "$vpy" -m pip install -q uv >"$cache/logs/uv-get.log" 2>&1 || return 1
  local args=() key val u
  while IFS= read -r line; do
    key="${line%%=*}"; key="${key##*.}"; val="${line#*=}"; val="${val#\'}"; val="${val%\'}"
    case "$key" in
      index-url) args+=(--index-url "$val") ;;
      extra-index-url) for u in $val; do args+=(--extra-index-url "$u"); done ;;
      find-links) for u in $val; do args+=(--find-links "$u"); done ;;
      constraint) for u in $val; do args+=(--constraint "$u"); done ;;
      no-index) args+=(--no-index) ;;
    esac
  done < <("$vpy" -m pip config list 2>/dev/null)
  "$venv/bin/uv" pip install -q --compile-bytecode --python "$vpy" "${args[@]}" -e "$repo[$build,test]" >"$cache/logs/install-uv.log" 2>&1
}
mkdir -p "$cache/logs"
if ! uv_install; then
  [ "${CNNBENCH_INSTALLER:-uv}" = uv ] && log "uv could not install it (log: $cache/logs/); installing with pip"
  run_logged install "$vpy" -m pip install -q -e "$repo[$build,test]"
fi

# ---- Horovod -------------------------------------------------------------------------
export HOROVOD_WITH_TENSORFLOW="${HOROVOD_WITH_TENSORFLOW:-1}"
export HOROVOD_WITH_GLOO="${HOROVOD_WITH_GLOO:-1}"
export HOROVOD_WITHOUT_PYTORCH="${HOROVOD_WITHOUT_PYTORCH:-1}"
export HOROVOD_WITHOUT_MXNET="${HOROVOD_WITHOUT_MXNET:-1}"
# MPI as well as Gloo where an MPI compiler wrapper is found (Open MPI's mpicxx: `mpirun` and
# `horovodrun --mpi` then work, and hierarchical all-reduce); Gloo alone otherwise. The user's own
# choice, either way, is kept.
if [ -z "${HOROVOD_WITH_MPI:-}" ] && [ -z "${HOROVOD_WITHOUT_MPI:-}" ]; then
  if command -v mpicxx >/dev/null 2>&1; then export HOROVOD_WITH_MPI=1; else export HOROVOD_WITHOUT_MPI=1; fi
fi
want_mpi=0
if [ "${HOROVOD_WITH_MPI:-0}" = 1 ]; then want_mpi=1; fi
# An installed Horovod is kept only where it is this version and has MPI exactly as wanted (an
# earlier Gloo-only install is rebuilt once mpicxx appears).
if "$vpy" -c "import horovod.tensorflow" >/dev/null 2>&1 \
   && [ "$("$vpy" -c 'import horovod; print(horovod.__version__)')" = "$hvd_version" ] \
   && [ "$("$vpy" -c 'import horovod.tensorflow as hvd; print(int(hvd.mpi_built()))' 2>/dev/null)" = "$want_mpi" ]; then
  log "horovod $hvd_version already installed"
else
  # The cache key covers everything that changes the binary.
  tfver="$("$vpy" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)" \
    || die "TensorFlow did not import in $venv"
  key="$(env | grep '^HOROVOD_' | sort | tr '\n' ' ')py$("$vpy" -c 'import sys;print("%d%d"%sys.version_info[:2])')-tf$tfver-$(uname -m)"
  keyhash="$(printf '%s' "$key" | sha256sum | cut -c1-16)"
  wheeldir="$cache/horovod-$hvd_version-$keyhash"
  whl="$(ls "$wheeldir"/horovod-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$whl" ]; then
    log "building horovod $hvd_version from source for TF $tfver (about 2-3 minutes; log: $cache/logs/)"
    command -v cmake >/dev/null || die "cmake not found (apt-get install cmake)"
    command -v g++ >/dev/null || die "g++ not found (apt-get install g++)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    run_logged horovod-download "$vpy" -m pip download -q --no-deps --no-binary :all: \
      "horovod==$hvd_version" -d "$work"
    tar -xzf "$work"/horovod-"$hvd_version".tar.gz -C "$work"
    src="$work/horovod-$hvd_version"
    # The one patch: xla_mpi_ops.cc (GPU-only XLA custom calls) includes XLA headers whose own
    # dependencies are not in TF 2.21's wheel. Dropping it from the build loses nothing on CPU.
    cml="$src/horovod/tensorflow/CMakeLists.txt"
    grep -q 'xla_mpi_ops.cc' "$cml" || die "expected xla_mpi_ops.cc in $cml; the sdist changed"
    sed -i '/xla_mpi_ops\.cc/d' "$cml"
    run_logged horovod-deps "$vpy" -m pip install -q cmake 'packaging' 'cloudpickle' 'psutil' 'pyyaml'
    mkdir -p "$wheeldir"
    MAKEFLAGS="-j$(nproc)" run_logged horovod-build "$vpy" -m pip wheel -v --no-deps \
      --no-build-isolation "$src" -w "$wheeldir"
    whl="$(ls "$wheeldir"/horovod-*.whl | head -n1)"
    log "cached $whl"
  else
    log "using cached horovod wheel $whl"
  fi
  run_logged horovod-install "$vpy" -m pip install -q "$whl"
fi

# What `horovodrun --check-build` lists (TensorFlow's ops load, Gloo is built), asked in one
# process: the command imports TensorFlow five times over (40 s of CPU here, against 7 s).
[ -x "$venv/bin/horovodrun" ] || die "horovodrun is missing from $venv/bin"
run_logged horovod-check "$vpy" -c 'import horovod.tensorflow as hvd
assert hvd.gloo_built(), "horovod is built without Gloo"
print("horovod: TensorFlow ops load, Gloo built, MPI", "built" if hvd.mpi_built() else "not built")'
log "$(grep "^horovod:" "$cache/logs/horovod-check.log" | tail -n 1)"
log "ready: $venv (activate with: source $venv/bin/activate)"
