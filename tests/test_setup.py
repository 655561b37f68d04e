"""The install: Horovod built against this TensorFlow, with Gloo, and importable alongside it."""
import shutil
import sys
from pathlib import Path


def _horovodrun() -> str:
    exe = Path(sys.executable).with_name("horovodrun")
    return str(exe) if exe.exists() else shutil.which("horovodrun")


def test_horovod_is_built_with_tensorflow_and_gloo():
    """What `horovodrun --check-build` lists, asked in process (the command imports TensorFlow five
    times over); the distributed tests run horovodrun itself."""
    import horovod.tensorflow as hvd

    assert _horovodrun(), "horovodrun is not installed; run scripts/setup.sh"
    assert hvd.gloo_built() and hvd.gloo_enabled() is not None
    assert not hvd.mpi_built() and not hvd.nccl_built()  # the CPU build: Gloo only (see --hvd-hierarchical)


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
