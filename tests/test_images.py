"""The streaming sources (imagefolder, tfrecord): readers checked against sets written by another
library (Pillow folders read by tf.data, TensorFlow's TFRecords read by the TF-free reader, the
generator's TFRecords read by tf.data), the crop decisions identical on both backends' pipelines,
the JAX pipeline free of TensorFlow, and corrupt images met mid-run skipped, counted, then failed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, run_cli, tree_snapshot, write_image_folder

from bench.config.schema import RunConfig
from bench.data.preprocess import RATIO, SCALE, decision, eval_box
from bench.data.sets.records import RecordError, parse_example, read_record, record_spans
from bench.data.source import read_data
from bench.errors import BenchInputError

TINY = ["--width", "0.125", "--image-size", "32", "--batch-size", "4", "--steps", "3", "--warmup-steps", "1",
        "--no-progress"]


def _source(data_dir: Path, data: str = "imagefolder", **kw):
    cfg = RunConfig(model="resnet18", data=data, data_dir=str(data_dir), image_size=32, **kw).resolved(has_gpu=False)
    return read_data(cfg)


# ---- the crop decision ------------------------------------------------------------------------
def test_the_crop_decision_keeps_torchvisions_rules_and_depends_only_on_seed_epoch_and_index():
    rng = np.random.default_rng(1)
    fallbacks = 0
    for k in range(400):
        h, w = int(rng.integers(20, 600)), int(rng.integers(20, 600))
        top, left, ch, cw, flip = decision(3, k % 4, k, h, w)
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and flip in (0, 1)
        area = ch * cw / (h * w)
        if area < SCALE[0] * 0.8 or not (RATIO[0] * 0.8 <= cw / ch <= RATIO[1] * 1.25):
            fallbacks += 1  # only the centre-crop fallback may leave the ranges (by rounding, a little)
        assert (decision(3, k % 4, k, h, w) == (top, left, ch, cw, flip)).all()
    assert fallbacks < 10
    # a 1000 x 10 strip has no box of the allowed ratios: the centre crop at 4/3 is the fallback
    assert decision(0, 0, 0, 10, 1000).tolist()[:4] == [0, (1000 - 13) // 2, 10, 13]
    assert (decision(0, 0, 1, 300, 400) != decision(0, 1, 1, 300, 400)).any()  # a new epoch, new crops
    assert eval_box(300, 400).tolist() == [19, 69, 262, 262, 0]


# ---- TensorFlow and the host pipeline on one set ----------------------------------------------
@pytest.mark.slow
def test_tf_and_host_pipelines_crop_and_flip_the_same_boxes_of_a_pillow_folder(tmp_path):
    """Gradient images (red follows x, green y): the same box and flip give the same pixels up to
    the resize filters' difference; another box or a missed flip differs by tens of levels."""
    write_image_folder(tmp_path / "set", classes=2, per_class=5, fmt="PNG")
    src = _source(tmp_path / "set", data_workers=0)
    import tensorflow as tf

    tf_batches = [(x.numpy(), y.numpy()) for x, y in src.train_dataset(1, 0, 4).take(4)]
    host = src.host_batches(1, 0, 4)
    host_batches = [next(host) for _ in range(4)]  # 16 images: past the first epoch of 10
    for (tx, ty), (hx, hy) in zip(tf_batches, host_batches):
        assert tx.shape == hx.shape == (4, 32, 32, 3) and tx.dtype == hx.dtype == np.uint8
        np.testing.assert_array_equal(ty, hy)  # the same images in the same order
        gap = np.abs(tx.astype(int) - hx.astype(int))
        # seen: median 0, max 2 levels (PNG: no decoder difference, only the resize filters'); with
        # another seed's boxes the same comparison gave medians of 24-65 levels and maxima of 164-248
        assert np.median(gap) <= 1 and gap.max() <= 8, (np.median(gap), gap.max())
    assert tf.__version__  # TensorFlow read it


@pytest.mark.slow
def test_tf_pipeline_reads_pillow_jpegs_and_evaluates_a_centre_crop(tmp_path):
    write_image_folder(tmp_path / "set" / "train", classes=3, per_class=2)
    write_image_folder(tmp_path / "set" / "val", classes=3, per_class=1, seed=1)
    src = _source(tmp_path / "set")
    assert src.num_classes == 3 and src.train_size == 6 and src.test_size == 3
    x, y = next(iter(src.train_dataset(2, 1, 2)))  # shard 1 of 2: the odd files
    assert x.shape == (2, 32, 32, 3) and set(y.numpy()) <= {0, 1, 2}
    batches = list(src.test_dataset(2))
    assert [int(b[0].shape[0]) for b in batches] == [2, 1]
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), [0, 1, 2])
    host = list(src.host_test_batches(2))
    gap = np.abs(np.concatenate([b[0] for b in host]).astype(int) - np.concatenate([b[0].numpy() for b in batches]))
    assert np.median(gap) <= 3  # the same centre box; JPEG decoders and resize filters differ a little


def test_without_split_folders_every_tenth_file_of_a_class_is_held_out(tmp_path):
    write_image_folder(tmp_path, classes=2, per_class=12)
    src = _source(tmp_path)
    assert src.train_size == 22 and src.test_size == 2
    tenth = sorted(f"img_{k}.jpg" for k in range(12))[9]  # sorted by name, as listed: img_10 before img_2
    assert [Path(p).name for p in src.stream.test.files] == [tenth, tenth]


# ---- TFRecords across libraries ---------------------------------------------------------------
def _tf_written_shards(folder: Path, n_shards: int = 2, per_shard: int = 3) -> list[tuple[bytes, int]]:
    import tensorflow as tf

    write_image_folder(folder / "img", classes=1, per_class=n_shards * per_shard)
    images = sorted((folder / "img" / "class_0").iterdir())
    written = []
    for s in range(n_shards):
        with tf.io.TFRecordWriter(str(folder / f"train-{s:05d}-of-{n_shards:05d}")) as w:
            for k in range(per_shard):
                data, label = images[s * per_shard + k].read_bytes(), 1 + (s * per_shard + k) % 3
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                           "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                           "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[30]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
                written.append((data, label))
    shutil.rmtree(folder / "img")
    return written


@pytest.mark.slow
def test_tensorflows_tfrecords_read_by_the_tf_free_reader(tmp_path):
    written = _tf_written_shards(tmp_path)
    read = []
    for shard in sorted(tmp_path.glob("train-*")):
        with open(shard, "rb") as f:
            for offset, length in record_spans(f, str(shard), check_data=10):
                ex = parse_example(read_record(str(shard), offset, length))
                read.append((ex["image/encoded"][0], ex["image/class/label"][0]))
                assert ex["image/height"] == [30]
    assert read == written
    src = _source(tmp_path, data="tfrecord", label_offset=1, num_classes=3, data_workers=0)
    labels = np.concatenate([next(src.host_batches(1, 0, 6))[1] for _ in range(1)])
    assert sorted(labels.tolist()) == sorted(label - 1 for _, label in written)
    # the same framing cut short, or not framing at all: one line each
    blob = (tmp_path / "train-00000-of-00002").read_bytes()
    for name, content, fragment in (("cut", blob[:-5], "truncated"), ("junk", b"\x07" * 64, "not a TFRecord")):
        (tmp_path / name).write_bytes(content)
        with open(tmp_path / name, "rb") as f, pytest.raises(RecordError, match=fragment):
            list(record_spans(f, name))


@pytest.mark.slow
def test_the_generators_sets_read_by_tf_data_and_by_both_sources(tmp_path):
    out = tmp_path / "il"
    r = subprocess.run([sys.executable, "-m", "bench.data.imagenet_like", str(out), "--classes", "2",
                        "--per-class", "3", "--val-per-class", "1", "--shards", "2"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import tensorflow as tf

    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            "image/height": tf.io.FixedLenFeature([], tf.int64), "image/width": tf.io.FixedLenFeature([], tf.int64)}
    records = {}
    for rec in tf.data.TFRecordDataset(sorted(str(p) for p in (out / "tfrecord").glob("train-*"))):
        ex = tf.io.parse_single_example(rec, spec)
        image = tf.io.decode_jpeg(ex["image/encoded"])
        assert image.shape[:2] == (ex["image/height"], ex["image/width"])
        assert 250 <= int(ex["image/height"]) <= 640
        records[ex["image/encoded"].numpy()] = int(ex["image/class/label"])
    folder = {p.read_bytes(): k + 1 for k, d in enumerate(sorted((out / "folders" / "train").iterdir()))
              for p in d.iterdir()}
    assert records == folder and len(records) == 6  # the same JPEGs, ImageNet's 1-based labels
    assert np.mean([len(b) for b in records]) > 30_000  # image-like content, not flat colour
    assert _source(out / "folders").train_size == 6
    assert _source(out / "tfrecord", data="tfrecord", label_offset=1, num_classes=2).test_size == 2
    again = subprocess.run([sys.executable, "-m", "bench.data.imagenet_like", str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "not empty" in again.stderr


# ---- whole runs --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_jax_run_on_tfrecords_never_imports_tensorflow(tmp_path):
    _tf_written_shards(tmp_path / "set", per_shard=4)
    argv = ["resnet18", "--backend", "jax", "--data", "tfrecord", "--data-dir", str(tmp_path / "set"),
            "--label-offset", "1", "--num-classes", "3", "--data-workers", "2", "--output", str(tmp_path / "r.csv"),
            *TINY]
    code = (f"import sys, json\nfrom bench.run import main\nrc = main({json.dumps(argv)})\n"
            "print(json.dumps({'rc': rc, 'tf': sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')}))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)})
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {"rc": 0, "tf": []}, r.stderr[-2000:]
    row = pd.read_csv(tmp_path / "r.csv").iloc[-1]
    assert row["preprocess"] == "inception_crop_flip" and row["data_workers"] == 2 and row["bad_images"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_corrupt_image_mid_run_is_skipped_and_counted_then_past_the_limit_fails_the_run(tmp_path, backend):
    data = write_image_folder(tmp_path / "set", classes=2, per_class=4)
    good = (data / "class_1" / "img_2.jpg").read_bytes()
    (data / "class_1" / "img_2.jpg").write_bytes(good[: len(good) // 2])  # not the sampled first file
    before = tree_snapshot(data)
    out = tmp_path / "runs.csv"
    args = ["resnet18", "--backend", backend, "--data", "imagefolder", "--data-dir", str(data), "--output", str(out),
            "--data-workers", "1", *TINY]
    ok = run_cli(*args)
    assert ok.returncode == 0, ok.stderr[-2000:]
    row = pd.read_csv(out).iloc[-1]
    assert row["status"] == "ok" and row["bad_images"] >= 1
    failed = run_cli(*args, "--max-bad-images", "0")
    assert failed.returncode == 1, failed.stderr[-2000:]
    row = pd.read_csv(out).iloc[-1]
    assert row["status"] == "failed" and "img_2.jpg" in row["error"] and "max_bad_images=0" in row["error"]
    assert tree_snapshot(data) == before  # nothing written into the data folder


@pytest.mark.slow
def test_a_folder_the_user_cannot_read_is_one_line(tmp_path):
    """Root reads every folder through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so the run is
    started as root without them (setpriv): permission bits then hold for it, while it still owns
    and reads the checkout, wherever that is (a fresh clone in a 0700 temporary folder included)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a child without root's read-anything capabilities")
    base = tmp_path / "unreadable"
    write_image_folder(base / "set")
    (base / "set" / "class_1").chmod(0o000)
    caps = "-dac_override,-dac_read_search"
    try:
        r = subprocess.run([setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--",
                            sys.executable, "bench/run.py", "resnet18", "--data", "imagefolder",
                            "--data-dir", str(base / "set"), "--output", str(base / "out" / "runs.csv"), *TINY],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "cannot read the class folder" in r.stderr and "class_1" in r.stderr
        assert not (base / "out").exists()
    finally:
        (base / "set" / "class_1").chmod(0o755)


def test_labels_beyond_num_classes_are_refused_before_any_framework(tmp_path):
    write_image_folder(tmp_path, classes=3, per_class=1)
    with pytest.raises(BenchInputError, match=r"labels out of range.*num_classes=2"):
        _source(tmp_path, num_classes=2)


def test_the_whole_image_check_is_one_rule_on_both_backends(tmp_path):
    """bench.data.sets.files.looks_whole (numpy side) and its tf ops (TensorFlow's pipeline) agree."""
    import tensorflow as tf

    from bench.data.sets.files import looks_whole
    from bench.data.stream import _tf_looks_whole

    write_image_folder(tmp_path / "j", classes=1, per_class=1)
    write_image_folder(tmp_path / "p", classes=1, per_class=1, fmt="PNG")
    jpeg, png = (tmp_path / "j/class_0/img_0.jpg").read_bytes(), (tmp_path / "p/class_0/img_0.png").read_bytes()
    cases = {"jpeg": (jpeg, True), "jpeg-zero-padded": (jpeg + b"\x00" * 5, True), "png": (png, True),
             "jpeg-cut": (jpeg[:-7], False), "png-cut": (png[:-3], False),
             "jpeg-padded-past-window": (jpeg + b"\x00" * 20, False),
             "text": (b"hello", False), "empty": (b"", False), "two-bytes": (b"\xff\xd8", False)}
    for name, (data, whole) in cases.items():
        assert looks_whole(data) is whole, name
        assert bool(_tf_looks_whole(tf.constant(data))) is whole, name
