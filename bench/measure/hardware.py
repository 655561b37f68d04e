"""What this machine has, asked without importing a framework (for sweeps and start-up failures)."""
from __future__ import annotations

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
