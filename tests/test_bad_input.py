"""The bad-input corpus: every case is a real process of one of the suite's commands (run, sweep,
report, local_cluster, bench.measure.traces, bench.lab.peer, python -m models, the cnnbench dispatcher,
scripts/compare_tf_cnn.sh) given one hostile-but-fair input. Each must exit with its code, print
exactly one line on stderr (no traceback, no usage block, no framework start-up line), leave
every CSV (and every file it was pointed at) byte-identical, and leave the whole temporary tree
as it found it: nothing created (not even the fresh --output folder each case is given),
changed or removed. The cases run a few at a time (one per core), the tree compared around the
batch (see _run_batch). One case per command also runs with an unwritable HOME and TensorFlow's
default logging. A run prints the corpus's count per command and per class (its section below)."""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import REPO, made_once, write_cifar100, write_image_folder

from bench.results.columns import SCHEMA_VERSION

NEWER = SCHEMA_VERSION + 1  # a schema no cnnbench has written yet

pytestmark = pytest.mark.slow  # each case starts a process
PY = sys.executable
TOOLS = {"run": [PY, "bench/run.py"], "sweep": [PY, "-m", "bench.sweep", "--no-progress"],
         "report": [PY, "-m", "bench.report"], "cluster": [PY, "-m", "launch.local_cluster"],
         "traces": [PY, "-m", "bench.measure.traces"], "peer": [PY, "-m", "bench.lab.peer"],
         "models": [PY, "-m", "models"], "cnnbench": [PY, "-m", "bench.cli"],
         "compare": ["bash", "scripts/compare_tf_cnn.sh"]}
SWEEP = ["--models", "vgg11", "--batch-sizes", "8", "--dry-run"]
MLLOG_RUN = ["lenet5", "--data", "digits", "--epochs", "1", "--mllog"]
TF_CONFIG_OK = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}

# (id, tool, arguments, extra environment, exit code, a fragment the error line must hold).
# {csv} is a real cnnbench CSV with one row, {fresh} a results CSV in a folder that does not exist
# yet (run and sweep get it as --output unless a case names one), {tmp} the case's own folder;
# other {names} are files made by `corpus_dir`. Each `# ---- name ----` line starts a class.
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
    ("run-target-ci-zero", "run", ["vgg11", "--target-ci", "0"], {}, 2, "target_ci=0"),
    ("run-target-ci-one", "run", ["vgg11", "--target-ci", "1"], {}, 2, "target_ci=1"),
    ("run-target-ci-word", "run", ["vgg11", "--target-ci", "tight"], {}, 2, "target_ci='tight'"),
    ("run-max-steps-below-steps", "run", ["vgg11", "--steps", "20", "--target-ci", "0.02", "--max-steps", "10"], {}, 2,
     "max_steps=10"),
    ("run-max-steps-without-target", "run", ["vgg11", "--max-steps", "100"], {}, 2, "max_steps=100"),
    ("run-warmup-steps-word", "run", ["vgg11", "--warmup-steps", "some"], {}, 2, "warmup_steps='some'"),
    ("run-epochs-on-synthetic", "run", ["vgg11", "--epochs", "2"], {}, 2, "data=synthetic"),
    ("run-data-dir-for-digits", "run", ["vgg11", "--data", "digits", "--data-dir", "{dir}"], {}, 2, "data=digits"),
    ("run-data-dir-missing", "run", ["vgg11", "--data", "cifar100", "--data-dir", "{dir}/nope"], {}, 2, "nope"),
    ("run-one-step-epoch", "run", ["lenet5", "--data", "digits", "--epochs", "1", "--batch-size", "1000"], {}, 2,
     "epochs=1"),
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
    # and before the model's weights exist: a malformed --init-weights file is not even read
    ("run-memory-refused-before-the-weights-are-read", "run", ["resnet18", "--batch-size", "1000000", "--width",
                                                               "0.125", "--num-classes", "10", "--init-weights",
                                                               "{weights_badkey}"], {}, 2, "exceeds available RAM"),
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
    # ---- bench/run.py: streaming data sets (imagefolder, tfrecord) -------------------------------
    ("run-images-empty-folder", "run", ["vgg11", "--data", "imagefolder", "--data-dir", "{img_empty}"], {}, 2,
     "image folder is empty"),
    ("run-images-no-class-folders", "run", ["vgg11", "--data", "imagefolder", "--data-dir", "{img_flat}"], {}, 2,
     "no class sub-folders"),
    ("run-images-class-without-images", "run", ["vgg11", "--data", "imagefolder", "--data-dir", "{img_noimages}"],
     {}, 2, "holds no"),
    ("run-images-not-an-image", "run", ["vgg11", "--data", "imagefolder", "--data-dir", "{img_text}"], {}, 2,
     "not a whole JPEG"),
    ("run-images-truncated-jpeg", "run", ["vgg11", "--data", "imagefolder", "--data-dir", "{img_truncated}"], {}, 2,
     "truncated"),
    ("run-images-too-few-classes", "run", ["vgg11", "--data", "imagefolder", "--data-dir", "{img_good}",
                                           "--num-classes", "1"], {}, 2, "num_classes=1"),
    ("run-images-no-dir", "run", ["vgg11", "--data", "imagefolder"], {}, 2, "needs --data-dir"),
    ("run-tfrecord-truncated", "run", ["vgg11", "--data", "tfrecord", "--data-dir", "{rec_truncated}"], {}, 2,
     "truncated TFRecord shard"),
    ("run-tfrecord-not-tfrecord", "run", ["vgg11", "--data", "tfrecord", "--data-dir", "{rec_garbage}"], {}, 2,
     "not a TFRecord file"),
    ("run-tfrecord-no-shards", "run", ["vgg11", "--data", "tfrecord", "--data-dir", "{img_empty}"], {}, 2,
     "no TFRecord shards"),
    ("run-tfrecord-label-range", "run", ["vgg11", "--data", "tfrecord", "--data-dir", "{rec_good}",
                                         "--num-classes", "2"], {}, 2, "labels out of range"),
    ("run-tfrecord-label-offset-below", "run", ["vgg11", "--data", "tfrecord", "--data-dir", "{rec_good}",
                                                "--label-offset", "9"], {}, 2, "label_offset=9"),
    ("run-label-offset-for-folders", "run", ["vgg11", "--data", "imagefolder", "--data-dir", "{img_good}",
                                             "--label-offset", "1"], {}, 2, "label_offset=1"),
    ("run-data-workers-negative", "run", ["vgg11", "--data-workers", "-1"], {}, 2, "data_workers=-1"),
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
    # ---- python -m bench.sweep ------------------------------------------------------------------------
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
    # ---- python -m bench.report -----------------------------------------------------------------------
    ("report-corrupted-cell", "report", ["{corrupt_cell}", "--out", "{dir}/rep"], {}, 2,
     "row 1, column batch_size: 'eight'"),
    ("report-fractional-schema", "report", ["{schema_1_5}", "--out", "{dir}/rep"], {}, 2,
     "column schema_version: '1.5'"),
    ("report-newer-schema", "report", ["{schema_newer}", "--out", "{dir}/rep"], {}, 2, "newer cnnbench"),
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
    ("report-nothing-to-compare", "report", ["--compare", "{csv}", "{header_only}", "--fail-on-regression"], {}, 2,
     "nothing to compare"),
    ("report-nothing-to-compare-no-gate", "report", ["--compare", "{csv}", "{header_only}"], {}, 2, "nothing to compare"),
    ("report-threshold-one", "report", ["--compare", "{csv}", "{csv}", "--fail-on-regression", "--threshold", "1"], {}, 2,
     "threshold=1.0"),
    ("report-threshold-negative", "report", ["--compare", "{csv}", "{csv}", "--threshold", "-0.05"], {}, 2,
     "threshold=-0.05"),
    # ---- python -m launch.local_cluster --------------------------------------------------------
    ("cluster-timeout-negative", "cluster", ["-n", "2", "--timeout", "-5", "--", "true"], {}, 2, "timeout=-5"),
    ("cluster-timeout-nan", "cluster", ["-n", "2", "--timeout", "nan", "--", "true"], {}, 2, "timeout=nan"),
    ("cluster-zero-workers", "cluster", ["-n", "0", "--", "true"], {}, 2, "num_workers=0"),
    ("cluster-absurd-workers", "cluster", ["-n", "100000", "--", "true"], {}, 2, "num_workers=100000"),
    ("cluster-word-workers", "cluster", ["-n", "two", "--", "true"], {}, 2, "num_workers='two'"),
    ("cluster-no-command", "cluster", ["-n", "2"], {}, 2, "no command"),
    ("cluster-abbreviated-option", "cluster", ["-n", "2", "--tim", "5", "--", "true"], {}, 2, "--tim"),
    # ---- bench/run.py and python -m bench.sweep: results files they must not rewrite or overgrow ----
    # files the writer would have to rewrite wrongly, or grow past what readers accept: refused
    # before anything trains ({cap_dir} is a folder so that each case does not copy its 256 MiB)
    ("run-output-newer-schema", "run", ["vgg11", "--output", "{schema_newer}"], {}, 2, f"newer schema ({NEWER} > "),
    ("run-output-duplicated-column", "run", ["vgg11", "--output", "{dup_column}"], {}, 2, "'model' twice"),
    ("run-output-split-by-a-raw-cr", "run", ["vgg11", "--output", "{raw_cr}"], {}, 2, "not a readable CSV"),
    ("run-output-at-size-cap", "run", ["vgg11", "--output", "{cap_dir}/runs.csv"], {}, 2, "pass --output NEW.csv"),
    ("sweep-output-newer-schema", "sweep", [*SWEEP, "--output", "{schema_newer}"], {}, 2, f"newer schema ({NEWER} > "),
    ("sweep-output-at-size-cap", "sweep", [*SWEEP, "--output", "{cap_dir}/runs.csv"], {}, 2,
     "pass --output NEW.csv"),
    ("report-duplicated-column", "report", ["{dup_column}", "--out", "{dir}/rep"], {}, 2, "'model' twice"),
    # ---- bench/run.py: --save-weights ----
    ("run-save-weights-missing-folder", "run", ["vgg11", "--save-weights", "{tmp}/nope/w.weights.h5"], {}, 2,
     "folder of --save-weights does not exist"),
    ("run-save-weights-missing-folder-jax", "run", ["vgg11", "--backend", "jax", "--save-weights",
                                                    "{tmp}/nope/w.weights.h5"], {}, 2, "does not exist"),
    ("run-save-weights-under-a-file", "run", ["vgg11", "--save-weights", "{foreign}/w.weights.h5"], {}, 2,
     "is not a folder"),
    ("run-save-weights-wrong-suffix", "run", ["vgg11", "--save-weights", "{tmp}/w.h5"], {}, 2,
     "save_weights={tmp}/w.h5"),
    ("run-save-weights-wrong-suffix-jax", "run", ["vgg11", "--backend", "jax", "--save-weights", "{tmp}/w.keras"],
     {}, 2, "must name a .weights.h5 file"),
    ("run-save-weights-suffix-alone", "run", ["vgg11", "--save-weights", "{tmp}/.weights.h5"], {}, 2,
     "must name a .weights.h5 file"),
    ("run-save-weights-directory", "run", ["vgg11", "--save-weights", "{dir}"], {}, 2, "is a directory"),
    ("run-save-weights-directory-jax", "run", ["vgg11", "--backend", "jax", "--save-weights", "{dir}"], {}, 2,
     "is a directory"),
    ("run-save-weights-device", "run", ["vgg11", "--save-weights", "{dev}"], {}, 2, "not a regular file"),
    ("run-save-weights-fifo", "run", ["vgg11", "--save-weights", "{fifo}"], {}, 2, "not a regular file"),
    ("run-save-weights-read-only-folder", "run", ["vgg11", "--save-weights", "{ro_dir}/w.weights.h5"], {}, 2,
     "cannot write --save-weights"),
    ("run-save-weights-read-only-folder-jax", "run", ["vgg11", "--backend", "jax", "--save-weights",
                                                      "{ro_dir}/w.weights.h5"], {}, 2, "cannot write --save-weights"),
    # ---- bench/run.py: --mllog ----
    ("run-mllog-device", "run", [*MLLOG_RUN, "{dev}"], {}, 2, "character device, not an MLLOG file"),
    ("run-mllog-link-to-device", "run", [*MLLOG_RUN, "{link_dev}"], {}, 2, "character device"),
    ("run-mllog-fifo", "run", [*MLLOG_RUN, "{fifo}"], {}, 2, "FIFO"),
    ("run-mllog-directory", "run", [*MLLOG_RUN, "{dir}"], {}, 2, "is a directory, not an MLLOG file"),
    ("run-mllog-not-an-mllog-file", "run", [*MLLOG_RUN, "{foreign}"], {}, 2, "is not an MLLOG file (line 1"),
    ("run-mllog-not-utf8", "run", [*MLLOG_RUN, "{latin1}"], {}, 2, "not UTF-8"),
    ("run-mllog-under-a-file", "run", [*MLLOG_RUN, "{foreign}/run.log"], {}, 2, "mllog={foreign}/run.log"),
    ("run-mllog-read-only-folder", "run", [*MLLOG_RUN, "{ro_dir}/new/run.log"], {}, 2, "cannot write the MLLOG"),
    ("run-mllog-throughput-run", "run", ["vgg11", "--mllog", "{tmp}/run.log"], {}, 2, "needs accuracy mode"),
    # ---- bench/run.py: --init-weights Keras cannot load ----
    ("run-init-weights-cannot-load", "run", ["vgg11", "--width", "0.125", "--num-classes", "10", "--init-weights",
                                             "{weights_strings}"], {}, 2, "cannot be loaded into vgg11"),
    ("run-init-weights-cannot-load-jax", "run", ["vgg11", "--backend", "jax", "--width", "0.125", "--num-classes",
                                                 "10", "--init-weights", "{weights_strings}"], {}, 2,
     "cannot be loaded into vgg11"),
    ("run-init-weights-malformed", "run", ["vgg11", "--width", "0.125", "--num-classes", "10", "--init-weights",
                                           "{weights_badkey}"], {}, 2, "not a well-formed Keras"),
    ("run-init-weights-malformed-jax", "run", ["vgg11", "--backend", "jax", "--width", "0.125", "--num-classes",
                                               "10", "--init-weights", "{weights_badkey}"], {}, 2,
     "not a well-formed Keras"),
    ("run-init-weights-legacy-suffix", "run", ["vgg11", "--width", "0.125", "--num-classes", "10", "--init-weights",
                                               "{weights_h5name}"], {}, 2, "must end in .weights.h5"),
    ("run-init-weights-of-another-model-tf", "run", ["vgg11", "--init-weights", "{resnet_weights}"], {}, 2,
     "layer 'unit1_conv1'"),
    ("run-init-weights-a-folder", "run", ["vgg11", "--init-weights", "{dir}"], {}, 2, "no such weights file"),
    # ---- bench/run.py: a refused run makes no folder ----
    ("run-refused-late-new-output-folder", "run", ["resnet18", "--batch-size", "1000000", "--output",
                                                   "{tmp}/new/deeper/runs.csv"], {}, 2, "exceeds available RAM"),
    ("run-output-read-only-folder", "run", ["vgg11", "--output", "{ro_dir}/new/runs.csv"], {}, 2,
     "cannot write results"),
    # ---- bench.measure.traces ----
    ("traces-no-folder", "traces", [], {}, 2, "trace_dir"),
    ("traces-missing-folder", "traces", ["{tmp}/nope"], {}, 2, "trace_dir={tmp}/nope"),
    ("traces-a-file", "traces", ["{foreign}"], {}, 2, "no such trace folder"),
    ("traces-no-trace-inside", "traces", ["{peer_dir}"], {}, 2, "no .xplane.pb"),
    ("traces-garbage", "traces", ["{garbage_trace}"], {}, 2, "cannot read a trace"),
    ("traces-empty", "traces", ["{empty_trace}"], {}, 2, "cannot read a trace"),
    ("traces-top-zero", "traces", ["{garbage_trace}", "--top", "0"], {}, 2, "top=0"),
    ("traces-top-word", "traces", ["{garbage_trace}", "--top", "all"], {}, 2, "top='all'"),
    ("traces-unknown-option", "traces", ["{garbage_trace}", "--bogus"], {}, 2, "--bogus"),
    ("traces-abbreviated-option", "traces", ["{garbage_trace}", "--to", "3"], {}, 2, "--to"),
    # ---- bench.lab.peer ----
    ("peer-no-peer-dir", "peer", [], {}, 2, "give --peer-dir"),
    ("peer-dir-without-script", "peer", ["--peer-dir", "{dir}"], {}, 2, "no tf_cnn_benchmarks.py"),
    ("peer-pairs-zero", "peer", ["--peer-dir", "{peer_dir}", "--pairs", "0"], {}, 2, "pairs=0"),
    ("peer-pairs-word", "peer", ["--peer-dir", "{peer_dir}", "--pairs", "three"], {}, 2, "pairs='three'"),
    ("peer-unknown-model", "peer", ["--peer-dir", "{peer_dir}", "--models", "mobilenet"], {}, 2, "models=mobilenet"),
    ("peer-append-foreign", "peer", ["--peer-dir", "{peer_dir}", "--append", "{foreign}"], {}, 2,
     "not a cnnbench results CSV"),
    ("peer-append-device", "peer", ["--peer-dir", "{peer_dir}", "--append", "{dev}"], {}, 2, "character device"),
    ("peer-python-missing", "peer", ["--peer-dir", "{peer_dir}", "--peer-python", "{tmp}/nope/python"], {}, 2,
     "peer_python={tmp}/nope/python"),
    ("peer-trace-missing", "peer", ["--peer-trace", "{tmp}/none.json"], {}, 2, "peer_trace={tmp}/none.json"),
    ("peer-trace-not-json", "peer", ["--peer-trace", "{foreign}"], {}, 2, "cannot read the peer's trace"),
    ("peer-trace-binary", "peer", ["--peer-trace", "{binary}"], {}, 2, "cannot read the peer's trace"),
    ("peer-abbreviated-option", "peer", ["--peer", "{peer_dir}"], {}, 2, "--peer"),
    # ---- python -m models ----
    ("models-unknown", "models", ["vgg99"], {}, 2, "vgg99"),
    ("models-width-word", "models", ["vgg11", "--width", "wide"], {}, 2, "width='wide'"),
    ("models-width-zero", "models", ["vgg11", "--width", "0"], {}, 2, "width=0"),
    ("models-width-nan", "models", ["vgg11", "--width", "nan"], {}, 2, "width=nan"),
    ("models-image-size-zero", "models", ["vgg11", "--image-size", "0"], {}, 2, "image_size=0"),
    ("models-num-classes-word", "models", ["vgg11", "--num-classes", "ten"], {}, 2, "num_classes='ten'"),
    ("models-image-too-small", "models", ["lenet5", "--image-size", "12"], {}, 2, "vanishes at conv2"),
    ("models-readme-missing", "models", ["--update-readme", "{tmp}/none.md"], {}, 2, "none.md"),
    ("models-readme-without-markers", "models", ["--update-readme", "{foreign}"], {}, 2, "model-table:begin"),
    ("models-readme-binary", "models", ["--update-readme", "{binary}"], {}, 2, "update_readme="),
    ("models-unknown-option", "models", ["vgg11", "--bogus"], {}, 2, "--bogus"),
    # ---- the cnnbench dispatcher ----
    ("cnnbench-no-command", "cnnbench", [], {}, 2, "give a command"),
    ("cnnbench-unknown-command", "cnnbench", ["train"], {}, 2, "'train'"),
    ("cnnbench-option-first", "cnnbench", ["--bogus"], {}, 2, "'--bogus'"),
    ("cnnbench-run-bad-value", "cnnbench", ["run", "vgg11", "--width", "inf", "--output", "{fresh}"], {}, 2,
     "width=inf"),
    ("cnnbench-run-memory", "cnnbench", ["run", "resnet18", "--batch-size", "1000000", "--output", "{fresh}"], {}, 2,
     "exceeds available RAM"),
    ("cnnbench-sweep-bad-value", "cnnbench", ["sweep", *SWEEP, "--timeout", "nan", "--output", "{fresh}"], {}, 2,
     "timeout=nan"),
    ("cnnbench-report-foreign", "cnnbench", ["report", "{foreign}", "--out", "{tmp}/rep"], {}, 2,
     "not a cnnbench results"),
    # ---- scripts/compare_tf_cnn.sh ----
    ("compare-no-folder", "compare", [], {}, 2, "give PEER_DIR"),
    ("compare-folder-missing", "compare", ["{tmp}/nope"], {}, 2, "Received: {tmp}/nope"),
    ("compare-folder-a-file", "compare", ["{foreign}"], {}, 2, "PEER_DIR is not a folder"),
    ("compare-folder-without-script", "compare", ["{dir}"], {}, 2, "no tf_cnn_benchmarks.py"),
    ("compare-pairs-zero", "compare", ["{peer_dir}", "--pairs", "0"], {}, 2, "pairs=0"),
    ("compare-unknown-model", "compare", ["{peer_dir}", "--models", "resnet18"], {}, 2, "models=resnet18"),
    ("compare-append-foreign", "compare", ["{peer_dir}", "--append", "{foreign}"], {}, 2, "not a cnnbench results"),
    ("compare-unknown-option", "compare", ["{peer_dir}", "--bogus"], {}, 2, "--bogus"),
    ("compare-no-cnnbench-python", "compare", ["{peer_dir}"], {"CNNBENCH_PYTHON": "{tmp}/nope/python"}, 2,
     "no cnnbench python"),
    # ---- launch.local_cluster: its command ----
    ("cluster-no-such-command", "cluster", ["-n", "2", "--", "no-such-command-cnnbench"], {}, 2,
     "no-such-command-cnnbench"),
    ("cluster-command-not-executable", "cluster", ["-n", "2", "--", "{foreign}"], {}, 2, "not executable"),
    ("cluster-command-a-folder", "cluster", ["-n", "2", "--", "{dir}"], {}, 2, "not executable"),
    # ---- the environment, launchers and sweep axes ----
    ("sweep-keras-backend-torch", "sweep", [*SWEEP], {"KERAS_BACKEND": "torch"}, 2, "KERAS_BACKEND=torch"),
    ("sweep-keras-backend-other", "sweep", [*SWEEP], {"KERAS_BACKEND": "jax"}, 2, "--backends jax"),
    ("sweep-tf-config-ps-task", "sweep", [*SWEEP],
     {"TF_CONFIG": json.dumps({**TF_CONFIG_OK, "cluster": {"worker": ["localhost:1"], "ps": ["localhost:2"]}})}, 2,
     "TF_CONFIG"),
    ("sweep-horovod-rank-by-hand", "sweep", [*SWEEP], {"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"}, 2,
     "HOROVOD_RANK=0"),
    ("sweep-axis-threads", "sweep", [*SWEEP, "--axis", "threads=1,2"], {}, 2, "axis=threads"),
    ("sweep-axis-force", "sweep", [*SWEEP, "--axis", "force=true,false"], {}, 2, "axis=force"),
    ("sweep-axis-collective-timeout", "sweep", [*SWEEP, "--axis", "collective_timeout=5,10"], {}, 2,
     "axis=collective_timeout"),
    ("sweep-axis-data-dir", "sweep", [*SWEEP, "--axis", "data_dir={dir},{dir}/x"], {}, 2, "axis=data_dir"),
    ("sweep-axis-init-weights", "sweep", [*SWEEP, "--axis", "init_weights={resnet_weights},{dir}/x.weights.h5"], {}, 2,
     "axis=init_weights"),
    ("sweep-axis-save-weights", "sweep", [*SWEEP, "--axis", "save_weights={dir}/a.weights.h5,{dir}/b.weights.h5"], {},
     2, "axis=save_weights"),
    ("sweep-axis-threads-with-find-max-batch", "sweep", ["--models", "vgg11", "--find-max-batch", "--axis",
                                                         "threads=1,2", "--dry-run"], {}, 2, "axis=threads"),
    ("run-tf-config-ps-task", "run", ["vgg11", "--strategy", "multiworker"],
     {"TF_CONFIG": json.dumps({**TF_CONFIG_OK, "cluster": {"worker": ["localhost:1"], "ps": ["localhost:2"]}})}, 2,
     "'ps' task"),
    ("run-tf-config-impossible-port", "run", ["vgg11", "--strategy", "multiworker"],
     {"TF_CONFIG": json.dumps({**TF_CONFIG_OK, "cluster": {"worker": ["localhost:99999", "localhost:2"]}})}, 2,
     "localhost:99999"),
    ("run-horovod-rank-without-launcher", "run", ["vgg11"], {"HOROVOD_RANK": "0", "HOROVOD_SIZE": "1"}, 2,
     "HOROVOD_RANK=0"),
    ("run-horovod-rank-without-launcher-explicit", "run", ["vgg11", "--strategy", "horovod"],
     {"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1"}, 2, "no Horovod launcher"),
    ("run-keras-backend-torch", "run", ["vgg11"], {"KERAS_BACKEND": "torch"}, 2, "KERAS_BACKEND=torch"),
    # ---- python -m bench.report: --out folders it does not own ----
    # --out holds files the report did not write (no manifest of its lists them): refused, untouched
    ("report-out-holds-a-users-plot", "report", ["{csv}", "--out", "{out_users_plot}"], {}, 2, "throughput.png"),
    ("report-out-holds-a-users-report", "report", ["{csv}", "--out", "{out_users_report}", "--format", "md"], {}, 2,
     "report.md"),
    ("report-out-report-is-a-folder", "report", ["{csv}", "--out", "{out_report_dir}", "--format", "html"], {}, 2,
     "report.html"),
    ("report-out-forged-manifest", "report", ["{csv}", "--out", "{out_forged_manifest}"], {}, 2, ".cnnbench-report"),
    ("report-out-manifest-lists-a-path", "report", ["{csv}", "--out", "{out_path_manifest}"], {}, 2,
     "not a cnnbench report manifest"),
    # ---- bench/run.py: the memory guard's floor ----
    ("run-memory-floor-not-a-number", "run", ["lenet5", "--width", "0.125"], {"CNNBENCH_MEMORY_FLOOR_BYTES": "lots"},
     2, "CNNBENCH_MEMORY_FLOOR_BYTES='lots'"),
    ("run-memory-floor-negative", "run", ["lenet5", "--width", "0.125"], {"CNNBENCH_MEMORY_FLOOR_BYTES": "-1"},
     2, "CNNBENCH_MEMORY_FLOOR_BYTES='-1'"),
]


def _csv_row_text(**cells: object) -> str:
    """A cnnbench CSV with one ok row; `cells` overwrite some of its cells (corrupt ones too)."""
    from bench.config.schema import RunConfig
    from bench.results.columns import COLUMNS
    from bench.results.row import Outcome, Topology, build_row
    from bench.results.store import format_row

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
    put("schema_newer.csv", _csv_row_text(schema_version=NEWER))
    put("header_only.csv", good.split("\n")[0] + "\n")
    put("empty.csv", "")
    # a duplicated column; a carriage return as older writers left it; a file
    # with less than a row's room below the size readers accept
    header, row = good.split("\n", 1)
    put("dup_column.csv", f"{header},model\n{row.rstrip(chr(10))},vgg13\n")
    put("raw_cr.csv", f"{header}\n{row.replace('vgg11', 'vgg' + chr(13) + '11', 1)}")
    from bench.results.store import MAX_CSV_BYTES, ROW_ROOM
    (d / "cap").mkdir()
    with open(d / "cap" / "runs.csv", "w") as f:
        f.write(good)
        while f.tell() + len(row) * 1024 <= MAX_CSV_BYTES - ROW_ROOM:
            f.write(row * 1024)
        while f.tell() <= MAX_CSV_BYTES - ROW_ROOM:
            f.write(row)
    files["cap_dir"] = str(d / "cap")
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
    files.update(_image_sets(d))
    nojax = d / "nojax"
    nojax.mkdir()
    (nojax / "sitecustomize.py").write_text(
        "import sys\nclass B:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('jax', 'jaxlib'):\n            raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n")
    files["nojax"] = str(nojax)
    files.update(_weights_files(made_once(tmp_path_factory, "corpus-weights", _write_weights)))
    peer_dir = d / "peer"  # a folder with the peer's script in it (empty: nothing may run it)
    peer_dir.mkdir()
    (peer_dir / "tf_cnn_benchmarks.py").write_text("")
    files["peer_dir"] = str(peer_dir)
    for name, content in (("garbage_trace", b"\xff" * 3000), ("empty_trace", b"")):
        nested = d / name / "plugins" / "profile" / "2026_01_01"  # where profilers put it
        nested.mkdir(parents=True)
        (nested / "host.xplane.pb").write_bytes(content)
        files[name] = str(d / name)
    files["ro_dir"] = _read_only_dir(d / "ro")
    files.update(_report_out_folders(d))
    yield files
    sock.close()
    if files["ro_dir"]:
        subprocess.run(["umount", "-l", files["ro_dir"]], capture_output=True)


def _image_sets(d: Path) -> dict[str, str]:
    """The streaming sources' bad folders and shards (tiny Pillow JPEGs, framed records)."""
    from bench.data.sets.records import encode_example, frame

    sets = {name: d / name for name in ("img_empty", "img_flat", "img_noimages", "img_text", "img_truncated",
                                        "img_good", "rec_truncated", "rec_garbage", "rec_good")}
    for folder in sets.values():
        folder.mkdir()
    write_image_folder(sets["img_good"])
    (sets["img_flat"] / "a.jpg").write_bytes((sets["img_good"] / "class_0" / "img_0.jpg").read_bytes())
    write_image_folder(sets["img_noimages"])
    (sets["img_noimages"] / "class_2").mkdir()
    (sets["img_noimages"] / "class_2" / "notes.txt").write_text("no images here")
    write_image_folder(sets["img_text"])
    (sets["img_text"] / "class_0" / "img_0.jpg").write_text("not an image")
    write_image_folder(sets["img_truncated"])
    good = (sets["img_good"] / "class_0" / "img_0.jpg").read_bytes()
    (sets["img_truncated"] / "class_0" / "img_0.jpg").write_bytes(good[: len(good) // 2])
    record = frame(encode_example({"image/encoded": good, "image/class/label": 5}))
    (sets["rec_good"] / "train-00000-of-00001").write_bytes(record * 3)
    (sets["rec_truncated"] / "train-00000-of-00001").write_bytes(record * 2 + record[:40])
    (sets["rec_garbage"] / "train-00000-of-00001").write_bytes(b"\x00\x01 not records " * 20)
    return {name: str(path) for name, path in sets.items()}


def _read_only_dir(path: Path) -> str:
    """A folder nobody can write to, root included: a read-only tmpfs (or, unprivileged, mode 0555);
    '' where neither holds (the cases that need it are skipped)."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if r.returncode == 0:
        return str(path)
    path.chmod(0o555)
    return "" if os.access(path, os.W_OK) else str(path)


WEIGHTS_CODE = """
import sys, h5py, numpy as np
sys.path.insert(0, '.')
import models
d = sys.argv[1]
models.build_model('resnet18', num_classes=10, width=0.125).save_weights(d + '/resnet18.weights.h5')
vgg = models.build_model('vgg11', num_classes=10, width=0.125)
for name in ('vgg11_strings', 'vgg11_badkey', 'vgg11_h5name'):
    vgg.save_weights(d + '/' + name + '.weights.h5')
with h5py.File(d + '/vgg11_strings.weights.h5', 'r+') as f:  # right shapes, text for numbers
    g = f['layers/conv2d/vars']
    shape = g['1'].shape
    del g['1']
    g.create_dataset('1', data=np.full(shape, b'x', dtype='S1'))
with h5py.File(d + '/vgg11_badkey.weights.h5', 'r+') as f:  # a variable under a name Keras never writes
    f['layers/conv2d/vars'].move('1', 'bias')
import os
os.rename(d + '/vgg11_h5name.weights.h5', d + '/vgg11_h5name.h5')
"""


def _write_weights(d: Path) -> None:
    """Real Keras weights files, written by one JAX subprocess: another model's (resnet18) and
    vgg11's (10 classes, width 0.125) that pass the shape check but that Keras cannot load, that
    are malformed, or that are named .h5 (Keras reads those as the legacy format)."""
    r = subprocess.run([PY, "-c", WEIGHTS_CODE, str(d)], cwd=REPO, capture_output=True, text=True, timeout=180,
                       env={**os.environ, "KERAS_BACKEND": "jax"})
    assert r.returncode == 0, r.stderr[-2000:]


def _weights_files(d: Path) -> dict[str, str]:
    return {"resnet_weights": str(d / "resnet18.weights.h5"), "weights_strings": str(d / "vgg11_strings.weights.h5"),
            "weights_badkey": str(d / "vgg11_badkey.weights.h5"), "weights_h5name": str(d / "vgg11_h5name.h5")}


def _string_label_archive(path: Path) -> None:
    import pickle

    import numpy as np

    from bench.data.sets.cifar100 import cifar100_archive

    rows = np.zeros((4, 3072), np.uint8)
    blob = pickle.dumps({b"data": rows, b"fine_labels": ["cat", "dog", "cat", "dog"]}, protocol=2)
    path.write_bytes(cifar100_archive({"train": blob, "test": blob}))


def _report_out_folders(d: Path) -> dict[str, str]:
    """--out folders holding a user's files of the report's names (each file is watched too)."""
    files = {}
    for key, name, content in (("out_users_plot", "throughput.png", b"my plot"),
                               ("out_users_report", "report.md", b"# my notes\n"),
                               ("out_forged_manifest", ".cnnbench-report", b"my list\n"),
                               ("out_path_manifest", ".cnnbench-report",
                                b'{"kind": "cnnbench report manifest", "files": ["../runs.csv"]}\n')):
        (d / key).mkdir()
        (d / key / name).write_bytes(content)
        files[key], files[f"{key}_file"] = str(d / key), str(d / key / name)
    (d / "out_report_dir" / "report.html").mkdir(parents=True)
    files["out_report_dir"] = str(d / "out_report_dir")
    return files


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


def _tree(root: Path, contents: bool = False) -> dict[str, object]:
    """Everything under `root`, recursively, links not followed: a file by its size, mtime and
    inode (a write moves the mtime, a replacement the inode; the session's tree holds every
    earlier test's files, read twice per case were they read whole), a folder by its mode, a link
    by its target, anything else by its mode. The files a case is pointed at are compared byte
    by byte besides (_snapshot); `contents` compares every file by its bytes. A temporary made
    and removed inside a case leaves no trace here; anything that stays does."""
    out: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[p] = Path(p).read_bytes() if contents else (st.st_size, st.st_mtime_ns, st.st_ino)
            else:
                out[p] = ("mode", st.st_mode)
    return out


def _trees(roots) -> dict[str, object]:
    return {k: v for root in roots for k, v in _tree(root).items()}


def _tree_diff(before: dict, after: dict) -> str:
    new = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"appeared {new[:5]}, disappeared {gone[:5]}, changed {changed[:5]}"


def _fill(text: str, values: dict[str, str]) -> str:
    """{name} placeholders filled where they name a file; other braces (JSON) left alone."""
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text


def _prepare_case(corpus_dir, tmp_path, tool, args, env, code, fragment, *, hostile_home: str | None = None
                  ) -> dict:
    """One case made ready to run in `tmp_path`, its own folder: the command, its environment and
    what it must leave as it found it, snapshotted now ({"skip": why} where this host cannot make
    one of its files)."""
    joined = " ".join(args)
    for key in ("dev", "link_dev", "ro_dir"):
        if "{" + key + "}" in joined and not corpus_dir.get(key):
            return {"skip": f"{{{key}}} needs root (mknod, mount) or an unprivileged user"}
    csv = tmp_path / "runs.csv"
    csv.write_text(_csv_row_text())
    fresh = tmp_path / "fresh" / "runs.csv"  # a folder that must still not exist afterwards
    values = {**corpus_dir, "csv": str(csv), "fresh": str(fresh), "tmp": str(tmp_path)}
    argv = [a.format(**values) for a in args]
    if tool in ("run", "sweep") and "--output" not in argv:
        argv += ["--output", str(fresh)]
    watched = [csv, *(Path(v) for k, v in corpus_dir.items() if k != "dir" and v), tmp_path / "x.csv",
               Path(REPO / "x.csv")]
    env = {k: _fill(v, values) for k, v in env.items()}
    base = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "CNNBENCH_BACKEND_SET")}
    base["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if tool == "compare":  # the peer's venv it would build, inside the tree: it must not appear
        base.update(CNNBENCH_PYTHON=PY, CNNBENCH_PEER_VENV=str(tmp_path / "peer-venv"))
    if hostile_home is not None:  # a HOME nobody can write to, and the frameworks' default logging
        for k in ("TF_CPP_MIN_LOG_LEVEL", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "KERAS_HOME"):
            base.pop(k, None)
        base["HOME"] = hostile_home
    return {"command": [*TOOLS[tool], *argv], "env": {**base, **env}, "code": code,
            "fragment": _fill(fragment, values), "tmp": tmp_path, "watched": watched, "before": _snapshot(watched)}


def _launch(case: dict) -> None:
    try:
        case["result"] = subprocess.run(case["command"], cwd=REPO, capture_output=True, text=True, timeout=180,
                                        env=case["env"], stdin=subprocess.DEVNULL)
    except subprocess.SubprocessError as e:  # a hung case fails its own test, not the batch
        case["result"] = e


def _check_case(case: dict) -> None:
    if "skip" in case:
        pytest.skip(case["skip"])
    r = case["result"]
    assert isinstance(r, subprocess.CompletedProcess), r
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == case["code"], (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("error:") and case["fragment"] in lines[0], lines[0]
    assert case["after"] == case["before"], "a file changed"
    assert not case["tree_diff"], f"the temporary tree changed: {case['tree_diff']}"
    assert not case["repo_changed"], "a file appeared in the repo"


CORPUS_TESTS = ("test_bad_input_corpus", "test_bad_input_with_an_unwritable_home_and_default_logging")


def _jobs() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def _run_batch(items: list, corpus_dir: dict, tmp_path_factory) -> dict[str, dict]:
    """These corpus tests' cases, by node id, each run as a real process of its command, a few at
    once (one per core: each is its own process in its own folder, and none may change anything).
    The whole temporary tree (this session's base folder, the corpus's files with it) and the repo
    are compared once around the batch: a change inside a case's own folder fails that case, a
    change anywhere else fails every case of the batch."""
    cases: dict[str, dict] = {}
    for item in items:
        params, home = item.callspec.params, None
        if item.originalname == CORPUS_TESTS[1]:
            if not corpus_dir["ro_dir"] or params["case_id"] not in BY_ID:
                continue  # the test skips, saying why (hostile_home), or fails naming the case
            params, home = dict(zip(("case_id", "tool", "args", "env", "code", "fragment"),
                                    BY_ID[params["case_id"]])), corpus_dir["ro_dir"]
        tmp = tmp_path_factory.mktemp(re.sub(r"\W", "_", item.name)[:30])  # as tmp_path names it
        cases[item.nodeid] = _prepare_case(corpus_dir, tmp, params["tool"], params["args"], params["env"],
                                           params["code"], params["fragment"], hostile_home=home)
    # this worker's temporary tree and the session's weights files, which xdist's workers share
    roots = (tmp_path_factory.getbasetemp(), Path(corpus_dir["resnet_weights"]).parent)
    tree, repo_top = _trees(roots), sorted(os.listdir(REPO))
    runnable = [c for c in cases.values() if "skip" not in c]
    with ThreadPoolExecutor(_jobs()) as pool:
        list(pool.map(_launch, runnable))
    after, repo_after = _trees(roots), sorted(os.listdir(REPO))
    changed = {k for k in set(tree) | set(after) if tree.get(k, "absent") != after.get(k, "absent")}
    owned = {c["tmp"]: {k for k in changed if k.startswith(f"{c['tmp']}{os.sep}")} for c in runnable}
    elsewhere = changed - set().union(*owned.values())
    for case in runnable:
        mine = owned[case["tmp"]] | elsewhere
        case["tree_diff"] = _tree_diff({k: v for k, v in tree.items() if k in mine},
                                       {k: v for k, v in after.items() if k in mine}) if mine else ""
        case["after"] = _snapshot(case["watched"])
        case["repo_changed"] = repo_after != repo_top
    return cases


@pytest.fixture(scope="module")
def _corpus_done() -> dict[str, dict]:
    return {}


@pytest.fixture
def corpus_case(request, corpus_dir, tmp_path_factory, _corpus_done) -> dict:
    """This test's case, run and checked around: on its first use, every corpus case this session
    selected and has not run yet is run in one batch (_run_batch); under pytest-xdist, whose
    workers already share the cores, each case runs alone when its test comes."""
    node = request.node
    if node.nodeid not in _corpus_done:
        batch = [node] if os.environ.get("PYTEST_XDIST_WORKER") else [
            i for i in request.session.items if i.module is node.module and i.originalname in CORPUS_TESTS
            and i.nodeid not in _corpus_done]
        _corpus_done.update(_run_batch(batch, corpus_dir, tmp_path_factory))
    return _corpus_done[node.nodeid]


@pytest.mark.parametrize("case_id,tool,args,env,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_corpus(corpus_case, case_id, tool, args, env, code, fragment):
    _check_case(corpus_case)


# One case per command (two for run, one per backend) again with an unwritable HOME and the
# frameworks' default logging: each reaches as far as its command goes (a framework started, a
# CSV read) before it refuses.
HOSTILE_ENV = ["run-init-weights-cannot-load", "run-memory-estimate-exceeds-ram-jax", "sweep-output-foreign",
               "report-nothing-to-compare", "cluster-no-such-command", "traces-garbage", "peer-append-foreign",
               "peer-pairs-word", "models-image-too-small", "cnnbench-run-memory",
               "compare-unknown-model"]
BY_ID = {c[0]: c for c in CASES}


@pytest.fixture(scope="module")
def hostile_home(corpus_dir) -> str:
    if not corpus_dir["ro_dir"]:
        pytest.skip("an unwritable HOME needs `mount -t tmpfs -o ro` (root) or an unprivileged user")
    return corpus_dir["ro_dir"]


@pytest.mark.parametrize("case_id", HOSTILE_ENV)
def test_bad_input_with_an_unwritable_home_and_default_logging(hostile_home, case_id, request):
    assert case_id in BY_ID, f"no corpus case {case_id!r}"
    _check_case(request.getfixturevalue("corpus_case"))


def case_classes() -> dict[str, str]:
    """Each case's class: the `# ---- name ----` section of CASES it is listed under."""
    out, current = {}, "unclassified"
    for line in Path(__file__).read_text().splitlines():
        header = re.match(r"\s*#\s*-{3,}\s*(.*?)\s*-{3,}\s*$", line)
        if header:
            current = header.group(1)
        case = re.match(r'\s*\("([^"]+)",\s*"([^"]+)",', line)
        if case and case.group(1) in BY_ID:
            out[case.group(1)] = current
    return out


def corpus_summary(stats: dict) -> list[str]:
    """Lines for pytest's terminal summary: the corpus cases this session ran, per command and per
    class, with how many passed (tests/conftest.py prints them)."""
    classes = case_classes()
    runs: list[tuple[str, str, str]] = []  # (command, class, outcome)
    for outcome in ("passed", "failed", "skipped"):
        for rep in stats.get(outcome, []):
            m = re.search(r"::test_bad_input_(corpus|with_an_unwritable_home_and_default_logging)\[(.+?)(?:-\d+)?\]$",
                          getattr(rep, "nodeid", ""))
            if not m or (outcome != "skipped" and rep.when != "call") or m.group(2) not in BY_ID:
                continue
            case_id = m.group(2)
            klass = classes.get(case_id, "unclassified") + (" [unwritable HOME]" if m.group(1) != "corpus" else "")
            runs.append((BY_ID[case_id][1], klass, outcome))
    if not runs:
        return []
    out = [f"bad-input corpus: {len(runs)} case runs, " + ", ".join(f"{n} {o}" for o, n in
                                                                      Counter(o for *_, o in runs).items())]
    for title, index in (("per command", 0), ("per class", 1)):
        out.append(f"  {title}:")
        counts = Counter((r[index], r[2]) for r in runs)
        keys = sorted({r[index] for r in runs})
        width = max(map(len, keys))
        for key in keys:
            detail = ", ".join(f"{counts[key, o]} {o}" for o in ("passed", "failed", "skipped") if counts[key, o])
            out.append(f"    {key:<{width}} {sum(counts[key, o] for o in ('passed', 'failed', 'skipped')):>4}  ({detail})")
    return out


def test_the_corpus_is_large_and_covers_every_tool():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    per_tool = Counter(c[1] for c in CASES)
    assert set(per_tool) == set(TOOLS), f"commands without cases: {set(TOOLS) - set(per_tool)}"
    assert min(per_tool.values()) >= 2, per_tool
    assert {BY_ID[i][1] for i in HOSTILE_ENV} == set(TOOLS), "a command without an unwritable-HOME case"
    classes = case_classes()
    assert set(classes) == set(BY_ID) and "unclassified" not in classes.values()


def test_a_full_disk_under_the_run_costs_its_row_and_nothing_else(tmpfs, tmp_path):
    """A real ENOSPC (a small tmpfs, filled), not one faked from os.fsync: the run trains, cannot
    append its row, says so on one line and exits 1; the CSV is byte-identical and the disk holds
    nothing new (no temporary, no partial file)."""
    disk = tmpfs(256)
    out = disk / "runs.csv"
    out.write_text(_csv_row_text())
    with open(disk / "ballast", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    before = _tree(disk, contents=True)
    r = subprocess.run([PY, "bench/run.py", "vgg11", "--width", "0.125", "--steps", "2", "--warmup-steps", "0",
                        "--batch-size", "2", "--no-progress", "--output", str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdin=subprocess.DEVNULL)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
    assert "could not write the result row" in lines[0] and "No space left" in lines[0], lines[0]
    after = {k: v for k, v in _tree(disk, contents=True).items() if not k.endswith(".csv.lock")}  # the writers' lock, kept by design
    assert after == before, _tree_diff(before, after)
