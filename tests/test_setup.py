"""The install: Horovod built against this TensorFlow, with Gloo, and importable alongside it."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _horovodrun() -> str:
    exe = Path(sys.executable).with_name("horovodrun")
    return str(exe) if exe.exists() else shutil.which("horovodrun")


@pytest.mark.slow
def test_horovodrun_check_build_lists_tensorflow_and_gloo():
    exe = _horovodrun()
    assert exe, "horovodrun is not installed; run scripts/setup.sh"
    out = subprocess.run([exe, "--check-build"], capture_output=True, text=True, timeout=120).stdout
    assert "[X] TensorFlow" in out
    assert "[X] Gloo" in out


def test_horovod_tensorflow_ops_load_in_process():
    import horovod
    import horovod.tensorflow as hvd

    assert horovod.__version__ == "0.28.1"
    hvd.init()
    try:
        assert hvd.size() == 1 and hvd.rank() == 0
        assert hvd.gloo_built()
    finally:
        hvd.shutdown()
