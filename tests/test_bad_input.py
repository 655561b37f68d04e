"""The bad-input corpus: every case is a real process of run, sweep, report or local_cluster
given one hostile-but-fair input. Each must exit with its code, print exactly one line on
stderr, no traceback, and leave every CSV (and every file it was pointed at) byte-identical."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, write_cifar100

pytestmark = pytest.mark.slow  # each case starts a process
PY = sys.executable
TOOLS = {"run": [PY, "bench/run.py"], "sweep": [PY, "bench/sweep.py", "--no-progress"],
         "report": [PY, "bench/report.py"], "cluster": [PY, "-m", "launch.local_cluster"]}
SWEEP = ["--models", "vgg11", "--batch-sizes", "8", "--dry-run"]
TF_CONFIG_OK = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}

# (id, tool, arguments, extra environment, exit code, a fragment the error line must hold).
# {csv} is a real cnnbench CSV with one row; other {names} are files made by `corpus_dir`.
CASES = [
    # ---- bench/run.py: where the row would go --------------------------------------------------
    ("run-output-device", "run", ["vgg11", "--output", "{dev}"], {}, 2, "character device"),
    ("run-output-fifo", "run", ["vgg11", "--output", "{fifo}"], {}, 2, "FIFO"),
    ("run-output-socket", "run", ["vgg11", "--output", "{sock}"], {}, 2, "socket"),
    ("run-output-dir", "run", ["vgg11", "--output", "{dir}"], {}, 2, "directory"),
    ("run-output-link-to-device", "run", ["vgg11", "--output", "{link_dev}"], {}, 2, "character device"),
    ("run-output-foreign-csv", "run", ["vgg11", "--output", "{foreign}"], {}, 2, "not a cnnbench results CSV"),
    ("run-output-not-utf8", "run", ["vgg11", "--output", "{latin1}"], {}, 2, "not UTF-8"),
    ("run-output-binary", "run", ["vgg11", "--output", "{binary}"], {}, 2, "not UTF-8"),
    ("run-output-under-a-file", "run", ["vgg11", "--output", "{foreign}/runs.csv"], {}, 2, "output="),
    # ---- bench/run.py: values ---------------------------------------------------------------------
    ("run-width-inf", "run", ["vgg11", "--width", "inf"], {}, 2, "width=inf"),
    ("run-width-nan", "run", ["vgg11", "--width", "nan"], {}, 2, "width=nan"),
    ("run-width-huge", "run", ["vgg11", "--width", "1e9"], {}, 2, "width=1e9"),
    ("run-lr-inf", "run", ["vgg11", "--lr", "inf"], {}, 2, "lr=inf"),
    ("run-lr-nan", "run", ["vgg11", "--lr", "nan"], {}, 2, "lr=nan"),
    ("run-lr-zero", "run", ["vgg11", "--lr", "0"], {}, 2, "lr=0"),
    ("run-weight-decay-inf", "run", ["vgg11", "--weight-decay", "inf"], {}, 2, "weight_decay=inf"),
    ("run-momentum-2", "run", ["vgg11", "--momentum", "2"], {}, 2, "momentum=2"),
    ("run-seed-huge", "run", ["vgg11", "--seed", "99999999999999999999"], {}, 2, "seed=99999999999999999999"),
    ("run-seed-negative", "run", ["vgg11", "--seed", "-1"], {}, 2, "seed=-1"),
    ("run-timeout-inf", "run", ["vgg11", "--collective-timeout", "inf"], {}, 2, "collective_timeout=inf"),
    ("run-timeout-zero", "run", ["vgg11", "--collective-timeout", "0"], {}, 2, "collective_timeout=0"),
    ("run-cpu-replicas-99", "run", ["vgg11", "--strategy", "mirrored", "--cpu-replicas", "99"], {}, 2,
     "cpu_replicas=99"),
    ("run-batch-zero", "run", ["vgg11", "--batch-size", "0"], {}, 2, "batch_size=0"),
    ("run-batch-float", "run", ["vgg11", "--batch-size", "1e3"], {}, 2, "batch_size='1e3'"),
    ("run-batch-absurd", "run", ["vgg11", "--batch-size", "99999999999"], {}, 2, "batch_size=99999999999"),
    ("run-steps-negative", "run", ["vgg11", "--steps", "-1"], {}, 2, "steps=-1"),
    ("run-image-size-zero", "run", ["vgg11", "--image-size", "0"], {}, 2, "image_size=0"),
    ("run-num-classes-zero", "run", ["vgg11", "--num-classes", "0"], {}, 2, "num_classes=0"),
    ("run-threads-negative", "run", ["vgg11", "--threads", "-2"], {}, 2, "threads=-2"),
    ("run-target-1.5", "run", ["vgg11", "--data", "digits", "--epochs", "1", "--target-accuracy", "1.5"], {}, 2,
     "target_accuracy=1.5"),
    ("run-unknown-model", "run", ["vgg99"], {}, 2, "vgg99"),
    ("run-unknown-data", "run", ["vgg11", "--data", "imagenet"], {}, 2, "imagenet"),
    ("run-unknown-precision", "run", ["vgg11", "--precision", "fp8"], {}, 2, "fp8"),
    ("run-unknown-strategy", "run", ["vgg11", "--strategy", "ring"], {}, 2, "ring"),
    ("run-abbreviated-option", "run", ["vgg11", "--out", "x.csv"], {}, 2, "--out"),
    ("run-unknown-option", "run", ["vgg11", "--bogus"], {}, 2, "--bogus"),
    ("run-warmup-without-scale", "run", ["vgg11", "--lr-warmup-epochs", "1"], {}, 2, "lr_warmup_epochs=1"),
    ("run-epochs-on-synthetic", "run", ["vgg11", "--epochs", "2"], {}, 2, "data=synthetic"),
    ("run-data-dir-for-digits", "run", ["vgg11", "--data", "digits", "--data-dir", "{dir}"], {}, 2, "data=digits"),
    ("run-data-dir-missing", "run", ["vgg11", "--data", "cifar100", "--data-dir", "{dir}/nope"], {}, 2, "nope"),
    ("run-mode-unknown", "run", ["vgg11", "--mode", "serve"], {}, 2, "'serve'"),
    ("run-profile-steps-one-number", "run", ["vgg11", "--profile-steps", "3"], {}, 2, "profile_steps='3'"),
    ("run-profile-steps-beyond", "run", ["vgg11", "--steps", "6", "--profile-steps", "5-9"], {}, 2, "profile_steps=5-9"),
    ("run-profile-steps-all", "run", ["vgg11", "--steps", "6", "--profile-steps", "1-6"], {}, 2, "profile_steps=1-6"),
    ("run-profile-steps-zero", "run", ["vgg11", "--profile-steps", "0-2"], {}, 2, "profile_steps=0-2"),
    ("run-nccl-without-gpus", "run", ["vgg11", "--strategy", "mirrored", "--all-reduce", "nccl"], {}, 2,
     "all_reduce=nccl"),
    ("run-ring-on-mirrored", "run", ["vgg11", "--strategy", "mirrored", "--all-reduce", "ring"], {}, 2,
     "all_reduce=ring"),
    ("run-all-reduce-unknown", "run", ["vgg11", "--strategy", "mirrored", "--all-reduce", "butterfly"], {}, 2,
     "'butterfly'"),
    ("run-all-reduce-on-single", "run", ["vgg11", "--all-reduce", "one-device"], {}, 2, "strategy=single"),
    ("run-hvd-compression-on-mirrored", "run", ["vgg11", "--strategy", "mirrored", "--hvd-compression", "fp16"], {},
     2, "hvd_compression=fp16"),
    ("run-hvd-compression-unknown", "run", ["vgg11", "--strategy", "horovod", "--hvd-compression", "int8"], {}, 2,
     "'int8'"),
    ("run-hvd-fusion-negative", "run", ["vgg11", "--strategy", "horovod", "--hvd-fusion-mb", "-1"], {}, 2,
     "hvd_fusion_mb=-1"),
    ("run-hvd-cycle-zero", "run", ["vgg11", "--strategy", "horovod", "--hvd-cycle-ms", "0"], {}, 2, "hvd_cycle_ms=0"),
    ("run-hvd-hierarchical-on-gloo", "run", ["vgg11", "--strategy", "horovod", "--hvd-hierarchical"], {}, 2,
     "hvd_hierarchical=True"),
    ("run-horovod-timeline-on-multiworker", "run", ["vgg11", "--strategy", "multiworker", "--horovod-timeline"], {},
     2, "hvd_timeline=True"),
    ("run-hvd-autotune-on-mirrored", "run", ["vgg11", "--strategy", "mirrored", "--hvd-autotune"], {}, 2,
     "hvd_autotune=True"),
    ("run-pack-on-mirrored", "run", ["vgg11", "--strategy", "mirrored", "--all-reduce-pack-mb", "4"], {}, 2,
     "all_reduce_pack_mb=4"),
    ("run-pack-negative", "run", ["vgg11", "--strategy", "multiworker", "--all-reduce-pack-mb", "-1"], {}, 2,
     "all_reduce_pack_mb=-1"),
    ("run-no-gradient-sync-on-single", "run", ["vgg11", "--no-gradient-sync"], {}, 2, "strategy=single"),
    ("run-no-gradient-sync-inference", "run", ["vgg11", "--strategy", "mirrored", "--mode", "inference",
                                               "--no-gradient-sync"], {}, 2, "mode=inference"),
    ("run-alexnet-paper-form-at-32px", "run", ["alexnet", "--form", "imagenet"], {}, 2, "vanishes at pool5"),
    ("run-lenet-image-too-small", "run", ["lenet5", "--image-size", "12"], {}, 2, "vanishes at conv2"),
    ("run-form-unknown", "run", ["vgg11", "--form", "tiny"], {}, 2, "'tiny'"),
    ("run-inference-too-few-steps", "run", ["vgg11", "--mode", "inference", "--steps", "99"], {}, 2, "steps=99"),
    ("run-inference-with-epochs", "run", ["vgg11", "--data", "digits", "--mode", "inference", "--epochs", "1"], {}, 2,
     "epochs=1"),
    # the estimate is made once the framework has started: its start-up lines must not leak out
    ("run-memory-estimate-exceeds-ram", "run", ["resnet18", "--batch-size", "1000000"], {}, 2,
     "exceeds available RAM"),
    ("run-memory-estimate-exceeds-ram-jax", "run", ["vgg11", "--backend", "jax", "--mode", "inference",
                                                    "--batch-size", "1048576", "--image-size", "224"], {}, 2,
     "exceeds available RAM"),
    # ---- bench/run.py: the environment and the data ------------------------------------------------
    ("run-tf-config-string-index", "run", ["vgg11", "--strategy", "multiworker"],
     {"TF_CONFIG": json.dumps({**TF_CONFIG_OK, "task": {"type": "worker", "index": "0"}})}, 2, "index='0'"),
    ("run-tf-config-not-json", "run", ["vgg11", "--strategy", "multiworker"], {"TF_CONFIG": "{cluster: oops"}, 2,
     "not valid JSON"),
    ("run-tf-config-index-out-of-range", "run", ["vgg11", "--strategy", "multiworker"],
     {"TF_CONFIG": json.dumps({**TF_CONFIG_OK, "task": {"type": "worker", "index": 5}})}, 2, "index=5"),
    ("run-tf-config-missing", "run", ["vgg11", "--strategy", "multiworker"], {"TF_CONFIG": ""}, 2, "TF_CONFIG"),
    ("run-single-among-workers", "run", ["vgg11", "--strategy", "single"], {"TF_CONFIG": json.dumps(TF_CONFIG_OK)},
     2, "one of 2 processes"),
    ("run-cifar-garbage-archive", "run", ["vgg11", "--data", "cifar100", "--data-dir", "{garbage_tgz}"], {}, 2,
     "garbage.tar.gz"),
    ("run-cifar-truncated", "run", ["vgg11", "--data", "cifar100", "--data-dir", "{truncated_tgz}"], {}, 2,
     "truncated"),
    ("run-cifar-string-labels", "run", ["vgg11", "--data", "cifar100", "--data-dir", "{string_labels}"], {}, 2,
     "labels must be integers"),
    ("run-cifar-split-is-a-folder", "run", ["vgg11", "--data", "cifar100", "--data-dir", "{split_is_dir}"], {}, 2,
     "has no 'train' file"),
    ("run-cifar-unreadable-split", "run", ["vgg11", "--data", "cifar100", "--data-dir", "{unreadable}"], {}, 2,
     "cannot read CIFAR-100"),
    ("run-unknown-backend", "run", ["vgg11", "--backend", "pytorch"], {}, 2, "pytorch"),
    ("run-horovod-on-jax", "run", ["vgg11", "--backend", "jax", "--strategy", "horovod"], {}, 2,
     "Horovod has no JAX binding"),
    ("run-no-xla-on-jax", "run", ["vgg11", "--backend", "jax", "--no-xla"], {}, 2, "XLA is always on"),
    ("run-two-backends", "run", ["vgg11", "--backend", "tensorflow"], {"KERAS_BACKEND": "jax"}, 2,
     "KERAS_BACKEND=jax"),
    ("run-jax-not-installed", "run", ["vgg11", "--backend", "jax"], {"PYTHONPATH": "{nojax}"}, 2,
     "pip install 'jax[cpu]'"),
    ("run-init-weights-missing", "run", ["vgg11", "--init-weights", "{dir}/none.weights.h5"], {}, 2,
     "none.weights.h5"),
    ("run-init-weights-of-another-model", "run", ["vgg11", "--backend", "jax", "--init-weights", "{resnet_weights}"],
     {}, 2, "layer 'unit1_conv1'"),
    ("run-init-weights-not-h5", "run", ["vgg11", "--backend", "jax", "--init-weights", "{foreign}"], {}, 2,
     "not a Keras .weights.h5"),
    # ---- bench/sweep.py ------------------------------------------------------------------------
    ("sweep-timeout-nan", "sweep", [*SWEEP, "--timeout", "nan"], {}, 2, "timeout=nan"),
    ("sweep-timeout-inf", "sweep", [*SWEEP, "--timeout", "inf"], {}, 2, "timeout=inf"),
    ("sweep-timeout-negative", "sweep", [*SWEEP, "--timeout", "-5"], {}, 2, "timeout=-5"),
    ("sweep-timeout-word", "sweep", [*SWEEP, "--timeout", "soon"], {}, 2, "timeout='soon'"),
    ("sweep-workers-zero", "sweep", [*SWEEP, "--workers", "0"], {}, 2, "workers=0"),
    ("sweep-workers-word", "sweep", [*SWEEP, "--workers", "two"], {}, 2, "workers='two'"),
    ("sweep-batch-zero", "sweep", ["--models", "vgg11", "--batch-sizes", "0", "--dry-run"], {}, 2, "batch_size=0"),
    ("sweep-unknown-strategy", "sweep", [*SWEEP, "--strategies", "ring"], {}, 2, "ring"),
    ("sweep-unknown-model", "sweep", ["--models", "vgg99", "--batch-sizes", "8", "--dry-run"], {}, 2, "vgg99"),
    ("sweep-abbreviated-output", "sweep", [*SWEEP, "--out", "x.csv"], {}, 2, "--out"),
    ("sweep-owned-option", "sweep", [*SWEEP, "--batch-size", "4"], {}, 2, "--batch-size"),
    ("sweep-run-option-inf", "sweep", [*SWEEP, "--width", "inf"], {}, 2, "width=inf"),
    ("sweep-output-device", "sweep", [*SWEEP, "--output", "{dev}"], {}, 2, "character device"),
    ("sweep-output-foreign", "sweep", [*SWEEP, "--output", "{foreign}"], {}, 2, "not a cnnbench results CSV"),
    ("sweep-toml-timeout-text", "sweep", ["--config", "{toml_timeout_text}", "--dry-run"], {}, 2, "timeout='soon'"),
    ("sweep-toml-run-not-table", "sweep", ["--config", "{toml_run_5}", "--dry-run"], {}, 2, "run=5"),
    ("sweep-toml-output-number", "sweep", ["--config", "{toml_output_5}", "--dry-run"], {}, 2, "output=5"),
    ("sweep-toml-models-number", "sweep", ["--config", "{toml_models_5}", "--dry-run"], {}, 2, "models=5"),
    ("sweep-toml-unknown-key", "sweep", ["--config", "{toml_unknown}", "--dry-run"], {}, 2, "batchsizes"),
    ("sweep-toml-bad-syntax", "sweep", ["--config", "{toml_bad}", "--dry-run"], {}, 2, "not valid TOML"),
    ("sweep-toml-run-list", "sweep", ["--config", "{toml_run_list}", "--dry-run"], {}, 2, "run="),
    ("sweep-toml-missing", "sweep", ["--config", "{dir}/none.toml", "--dry-run"], {}, 2, "none.toml"),
    ("sweep-unknown-backend", "sweep", [*SWEEP, "--backends", "tensorflow,pytorch"], {}, 2, "pytorch"),
    ("sweep-owned-backend", "sweep", [*SWEEP, "--backend", "jax"], {}, 2, "--backend"),
    ("sweep-no-models", "sweep", ["--batch-sizes", "8", "--dry-run"], {}, 2, "--models"),
    ("sweep-max-batch-with-batch-sizes", "sweep", [*SWEEP, "--find-max-batch"], {}, 2, "batch_sizes=8"),
    ("sweep-memory-cap-zero", "sweep", ["--models", "vgg11", "--find-max-batch", "--memory-cap-gb", "0", "--dry-run"],
     {}, 2, "memory_cap_gb=0"),
    ("sweep-memory-cap-negative", "sweep", ["--models", "vgg11", "--find-max-batch", "--memory-cap-gb", "-1",
                                            "--dry-run"], {}, 2, "memory_cap_gb=-1"),
    ("sweep-memory-cap-nan", "sweep", ["--models", "vgg11", "--find-max-batch", "--memory-cap-gb", "nan",
                                       "--dry-run"], {}, 2, "memory_cap_gb=nan"),
    ("sweep-memory-cap-without-search", "sweep", [*SWEEP, "--memory-cap-gb", "2"], {}, 2, "memory_cap_gb=2"),
    ("sweep-toml-find-max-batch-text", "sweep", ["--config", "{toml_find_text}", "--dry-run"], {}, 2,
     "find_max_batch='yes'"),
    ("sweep-mode-unknown", "sweep", [*SWEEP, "--mode", "serve"], {}, 2, "'serve'"),
    ("sweep-axis-unknown-option", "sweep", [*SWEEP, "--axis", "lrr=0.1,0.2"], {}, 2, "axis=lrr"),
    ("sweep-axis-owned", "sweep", [*SWEEP, "--axis", "strategy=single,horovod"], {}, 2, "--strategies"),
    ("sweep-axis-bad-value", "sweep", [*SWEEP, "--axis", "lr=0.1,inf"], {}, 2, "lr=inf"),
    ("sweep-axis-no-values", "sweep", [*SWEEP, "--axis", "lr="], {}, 2, "axis=lr="),
    ("sweep-axis-no-equals", "sweep", [*SWEEP, "--axis", "lr"], {}, 2, "axis='lr'"),
    ("sweep-axis-toggle-word", "sweep", [*SWEEP, "--axis", "xla=yes"], {}, 2, "xla='yes'"),
    ("sweep-toml-axes-not-lists", "sweep", ["--config", "{toml_axes_bad}", "--dry-run"], {}, 2, "axes="),
    ("sweep-granularity-zero", "sweep", ["--models", "vgg11", "--find-max-batch", "--batch-granularity", "0",
                                         "--dry-run"], {}, 2, "batch_granularity=0"),
    ("sweep-granularity-without-search", "sweep", [*SWEEP, "--batch-granularity", "8"], {}, 2,
     "batch_granularity=8"),
    # ---- bench/report.py -----------------------------------------------------------------------
    ("report-corrupted-cell", "report", ["{corrupt_cell}", "--out", "{dir}/rep"], {}, 2,
     "row 1, column batch_size: 'eight'"),
    ("report-fractional-schema", "report", ["{schema_1_5}", "--out", "{dir}/rep"], {}, 2,
     "column schema_version: '1.5'"),
    ("report-newer-schema", "report", ["{schema_9}", "--out", "{dir}/rep"], {}, 2, "newer cnnbench"),
    ("report-targz-as-csv", "report", ["{garbage_tgz}", "--out", "{dir}/rep"], {}, 2, "not UTF-8"),
    ("report-real-targz-as-csv", "report", ["{real_tgz}", "--out", "{dir}/rep"], {}, 2, "not UTF-8"),
    ("report-foreign-csv", "report", ["{foreign}", "--out", "{dir}/rep"], {}, 2, "not a cnnbench results"),
    ("report-empty-file", "report", ["{empty}", "--out", "{dir}/rep"], {}, 2, "empty"),
    ("report-device", "report", ["{dev}", "--out", "{dir}/rep"], {}, 2, "character device"),
    ("report-directory", "report", ["{dir}", "--out", "{dir}/rep"], {}, 2, "directory"),
    ("report-missing-file", "report", ["{dir}/missing.csv"], {}, 2, "missing.csv"),
    ("report-bad-format", "report", ["{csv}", "--format", "pdf", "--out", "{dir}/rep"], {}, 2, "format=pdf"),
    ("report-abbreviated-option", "report", ["{csv}", "--ou", "{dir}/rep"], {}, 2, "--ou"),
    ("report-out-is-a-file", "report", ["{csv}", "--out", "{foreign}"], {}, 2, "out="),
    ("report-nothing-to-compare", "report", ["--compare", "{csv}", "{header_only}", "--fail-on-regression"], {}, 1,
     "nothing to compare"),
    # ---- python -m launch.local_cluster --------------------------------------------------------
    ("cluster-timeout-negative", "cluster", ["-n", "2", "--timeout", "-5", "--", "true"], {}, 2, "timeout=-5"),
    ("cluster-timeout-nan", "cluster", ["-n", "2", "--timeout", "nan", "--", "true"], {}, 2, "timeout=nan"),
    ("cluster-zero-workers", "cluster", ["-n", "0", "--", "true"], {}, 2, "num_workers=0"),
    ("cluster-absurd-workers", "cluster", ["-n", "100000", "--", "true"], {}, 2, "num_workers=100000"),
    ("cluster-word-workers", "cluster", ["-n", "two", "--", "true"], {}, 2, "num_workers='two'"),
    ("cluster-no-command", "cluster", ["-n", "2"], {}, 2, "no command"),
    ("cluster-abbreviated-option", "cluster", ["-n", "2", "--tim", "5", "--", "true"], {}, 2, "--tim"),
    # ---- issue 21: memory ----
    ("run-memory-floor-not-a-number", "run", ["lenet5", "--width", "0.125"], {"CNNBENCH_MEMORY_FLOOR_BYTES": "lots"},
     2, "CNNBENCH_MEMORY_FLOOR_BYTES='lots'"),
    ("run-memory-floor-negative", "run", ["lenet5", "--width", "0.125"], {"CNNBENCH_MEMORY_FLOOR_BYTES": "-1"},
     2, "CNNBENCH_MEMORY_FLOOR_BYTES='-1'"),
]


def _csv_row_text(**cells: object) -> str:
    """A cnnbench CSV with one ok row; `cells` overwrite some of its cells (corrupt ones too)."""
    from bench.config import RunConfig
    from bench.results import COLUMNS, Outcome, Topology, build_row, format_row

    row = build_row(RunConfig(model="vgg11", batch_size=8).resolved(has_gpu=False), Outcome("ok"),
                    topology=Topology(1, 1, 8, 8))
    return ",".join(COLUMNS) + "\n" + format_row({**row, "images_per_sec_median": 10.0, **cells})


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("corpus")
    files: dict[str, str] = {"dir": str(d)}
    good = _csv_row_text()

    def put(name: str, content: str | bytes) -> None:
        p = d / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        files[Path(name).stem.replace(".tar", "").replace("-", "_")] = str(p)

    try:  # a device node of our own (the null device's numbers), never one in /dev
        os.mknod(d / "dev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        files["dev"] = str(d / "dev")
        os.symlink(d / "dev", d / "link_dev")
        files["link_dev"] = str(d / "link_dev")
    except PermissionError:
        pass
    os.mkfifo(d / "fifo")
    files["fifo"] = str(d / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    files["sock"] = str(d / "sock")
    put("foreign.csv", "a,b\n1,2\n")
    put("latin1.csv", b"schema_version,model,status\n1,caf\xe9,ok\n")
    put("binary.csv", os.urandom(4096))
    put("garbage.tar.gz", os.urandom(4096))
    put("corrupt_cell.csv", _csv_row_text(batch_size="eight"))
    put("schema_1_5.csv", _csv_row_text(schema_version="1.5"))
    put("schema_9.csv", _csv_row_text(schema_version=9))
    put("header_only.csv", good.split("\n")[0] + "\n")
    put("empty.csv", "")
    put("toml_timeout_text.toml", 'models = ["vgg11"]\nbatch_sizes = [8]\ntimeout = "soon"\n')
    put("toml_run_5.toml", 'models = ["vgg11"]\nbatch_sizes = [8]\nrun = 5\n')
    put("toml_output_5.toml", 'models = ["vgg11"]\nbatch_sizes = [8]\noutput = 5\n')
    put("toml_models_5.toml", 'models = 5\nbatch_sizes = [8]\n')
    put("toml_unknown.toml", 'models = ["vgg11"]\nbatchsizes = [8]\n')
    put("toml_bad.toml", 'models = ["vgg11"\n')
    put("toml_find_text.toml", 'models = ["vgg11"]\nfind_max_batch = "yes"\n')
    put("toml_axes_bad.toml", 'models = ["vgg11"]\nbatch_sizes = [8]\naxes = [1, 2]\n')
    put("toml_run_list.toml", 'models = ["vgg11"]\nbatch_sizes = [8]\n[run]\nwidth = [0.5]\n')
    write_cifar100(d / "real.tar.gz")
    files["real_tgz"] = str(d / "real.tar.gz")
    write_cifar100(d / "truncated.tar.gz", truncate=True)
    files["truncated_tgz"] = str(d / "truncated.tar.gz")
    files["garbage_tgz"] = files.pop("garbage")
    _string_label_archive(d / "string_labels.tar.gz")
    files["string_labels"] = str(d / "string_labels.tar.gz")
    split_is_dir = d / "split_is_dir" / "cifar-100-python"
    (split_is_dir / "train").mkdir(parents=True)
    (split_is_dir / "test").write_bytes(b"x")
    files["split_is_dir"] = str(split_is_dir.parent)
    # a split whose read fails even for root: /proc/self/mem is a regular file that cannot be read from 0
    unreadable = d / "unreadable" / "cifar-100-python"
    unreadable.mkdir(parents=True)
    os.symlink("/proc/self/mem", unreadable / "train")
    os.symlink("/proc/self/mem", unreadable / "test")
    files["unreadable"] = str(unreadable.parent)
    nojax = d / "nojax"
    nojax.mkdir()
    (nojax / "sitecustomize.py").write_text(
        "import sys\nclass B:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('jax', 'jaxlib'):\n            raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n")
    files["nojax"] = str(nojax)
    files["resnet_weights"] = str(_resnet_weights(d / "resnet18.weights.h5"))
    yield files
    sock.close()


def _resnet_weights(path: Path) -> Path:
    """A real Keras weights file of another model, written by a JAX subprocess."""
    code = ("import sys; sys.path.insert(0, '.'); import models; "
            f"models.build_model('resnet18', num_classes=10, width=0.125).save_weights({str(path)!r})")
    subprocess.run([PY, "-c", code], cwd=REPO, env={**os.environ, "KERAS_BACKEND": "jax"}, check=True,
                   capture_output=True, timeout=120)
    return path


def _string_label_archive(path: Path) -> None:
    import pickle

    import numpy as np

    from bench.data import cifar100_archive

    rows = np.zeros((4, 3072), np.uint8)
    blob = pickle.dumps({b"data": rows, b"fine_labels": ["cat", "dog", "cat", "dog"]}, protocol=2)
    path.write_bytes(cifar100_archive({"train": blob, "test": blob}))


def _snapshot(paths: list[Path]) -> dict[str, object]:
    """What each path is: bytes for a regular file, its mode for anything else, None if absent."""
    out = {}
    for p in paths:
        if p.is_symlink() or p.exists():
            st = p.lstat()
            out[str(p)] = p.read_bytes() if stat.S_ISREG(st.st_mode) else (st.st_mode, os.readlink(p) if p.is_symlink() else "")
        else:
            out[str(p)] = None
    return out


@pytest.mark.parametrize("case_id,tool,args,env,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_corpus(corpus_dir, tmp_path, case_id, tool, args, env, code, fragment):
    if "{dev}" in " ".join(args) and "dev" not in corpus_dir or "{link_dev}" in " ".join(args) and "link_dev" not in corpus_dir:
        pytest.skip("mknod needs root")
    csv = tmp_path / "runs.csv"
    csv.write_text(_csv_row_text())
    values = {**corpus_dir, "csv": str(csv)}
    argv = [a.format(**values) for a in args]
    if tool in ("run", "sweep") and "--output" not in argv:
        argv += ["--output", str(csv)]
    watched = [csv, *(Path(v) for k, v in corpus_dir.items() if k != "dir"), tmp_path / "x.csv", Path(REPO / "x.csv")]
    before = _snapshot(watched)
    listing = sorted(os.listdir(corpus_dir["dir"]))
    env = {k: values[v[1:-1]] if v.startswith("{") and v[1:-1] in values else v for k, v in env.items()}
    base = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "CNNBENCH_BACKEND_SET")}
    r = subprocess.run([*TOOLS[tool], *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**base, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, stdin=subprocess.DEVNULL)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("error:") and fragment in lines[0], lines[0]
    assert _snapshot(watched) == before, "a file changed"
    assert sorted(os.listdir(corpus_dir["dir"])) == listing, "a file appeared"


def test_the_corpus_is_large_and_covers_every_tool():
    assert len(CASES) >= 60
    assert {c[1] for c in CASES} == set(TOOLS)
    assert len({c[0] for c in CASES}) == len(CASES)
