"""What this machine has, asked without importing a framework (for sweeps and start-up failures)."""
from __future__ import annotations

import os
import shutil
import subprocess


def gpu_count() -> int:
    """NVIDIA GPUs on this machine, as `nvidia-smi -L` lists them (0 without the tool)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def visible_gpus() -> int:
    """The GPUs a framework started in this process would see: nvidia-smi's, narrowed by
    CUDA_VISIBLE_DEVICES as CUDA reads it (indices or UUIDs, up to the first invalid entry:
    "" or "-1" hides every GPU)."""
    n = gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if n == 0 or visible is None:
        return n
    seen = 0
    for entry in (e.strip() for e in visible.split(",")):
        if not (entry.startswith(("GPU-", "MIG-")) or (entry.isdigit() and int(entry) < n)):
            break
        seen += 1
    return min(seen, n)


def has_gpu(backend: str) -> bool:
    """Whether `backend` will run on a GPU here, learned without importing it: a visible GPU,
    and for JAX no JAX_PLATFORMS that leaves the GPU out."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if backend == "jax" and platforms and not {"cuda", "gpu", "rocm"} & {p.strip() for p in platforms.split(",")}:
        return False
    return visible_gpus() > 0


def gpu_total_bytes() -> int | None:
    """The smallest memory size of the GPUs nvidia-smi lists (None without the tool)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        sizes = [int(x) * 2**20 for x in out.split() if x.strip().isdigit()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return min(sizes) if sizes else None
