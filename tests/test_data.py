"""Data sources: the CIFAR-100 format, digits, synthetic, and bad-data errors."""
import pkgutil

import numpy as np
import pytest
from helpers import write_cifar100

import bench.data.sets as data_sets
from bench.config import schema
from bench.config.schema import RunConfig
from bench.data import source
from bench.data.sets.cifar100 import load_cifar100
from bench.data.source import load_data
from bench.errors import BenchInputError


def _cfg(**kw) -> RunConfig:
    return RunConfig(model="resnet18", **kw).resolved(has_gpu=False)


@pytest.mark.parametrize("layout", ["archive", "folder", "parent-of-archive"])
def test_cifar_decodes_channel_major_to_nhwc_and_keeps_the_splits(tmp_path, layout):
    if layout == "folder":
        expected = write_cifar100(tmp_path, as_folder=True)
        where = tmp_path / "cifar-100-python"
    else:
        expected = write_cifar100(tmp_path / "cifar-100-python.tar.gz")
        where = tmp_path if layout == "parent-of-archive" else tmp_path / "cifar-100-python.tar.gz"
    train, test = load_cifar100(str(where))
    np.testing.assert_array_equal(train.images, expected["train"][0])
    np.testing.assert_array_equal(test.images, expected["test"][0])
    np.testing.assert_array_equal(test.labels, expected["test"][1])
    assert train.images.shape == (64, 32, 32, 3) and test.images.shape == (32, 32, 32, 3)


def test_cifar_pixel_order_by_hand(tmp_path):
    """The first 1024 bytes of a row are the red plane, row-major: pixel (0,1) red is byte 1."""
    expected = write_cifar100(tmp_path / "c.tar.gz", n_train=2, n_test=2)
    train, _ = load_cifar100(str(tmp_path / "c.tar.gz"))
    raw = expected["train"][0].transpose(0, 3, 1, 2).reshape(2, 3072)
    assert train.images[0, 0, 1, 0] == raw[0, 1]           # red, row 0, col 1
    assert train.images[0, 1, 0, 1] == raw[0, 1024 + 32]   # green, row 1, col 0
    assert train.images[1, 31, 31, 2] == raw[1, 3071]      # blue, last pixel


def test_test_dataset_serves_exactly_the_test_split(tmp_path):
    expected = write_cifar100(tmp_path / "c.tar.gz", n_train=40, n_test=24)
    src = load_data(_cfg(data="cifar100", data_dir=str(tmp_path / "c.tar.gz")))
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in src.test_dataset(10)])
    np.testing.assert_allclose(np.concatenate(xs), expected["test"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate(ys), expected["test"][1])


def test_train_shards_are_disjoint_and_cover_the_split(tmp_path):
    write_cifar100(tmp_path / "c.tar.gz", n_train=40, n_test=8)
    src = load_data(_cfg(data="cifar100", data_dir=str(tmp_path / "c.tar.gz")))
    seen = []
    for shard in range(2):
        batches = src.train_dataset(2, shard, 5).take(4)  # one pass over a 20-image shard
        seen.append({x.numpy().tobytes() for b, _ in batches for x in b})
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 40


def test_augment_and_normalize_shapes(tmp_path):
    write_cifar100(tmp_path / "c.tar.gz", n_train=16, n_test=8)
    src = load_data(_cfg(data="cifar100", data_dir=str(tmp_path / "c.tar.gz"), augment=True, normalize=True))
    x, y = next(iter(src.train_dataset(1, 0, 8)))
    assert x.shape == (8, 32, 32, 3) and y.shape == (8,)
    assert abs(float(np.mean(x))) < 0.5  # normalised around zero


def test_digits_is_deterministic_and_resized():
    a = load_data(_cfg(data="digits"))
    b = load_data(_cfg(data="digits", seed=7))
    assert a.train.images.shape == (1438, 32, 32, 3) and a.test.images.shape == (359, 32, 32, 3)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert a.num_classes == 10 and set(np.unique(a.train.labels)) == set(range(10))


def test_synthetic_is_one_fixed_batch():
    src = load_data(_cfg())
    assert src.fixed
    it = iter(src.train_dataset(1, 0, 4))
    (x1, y1), (x2, y2) = next(it), next(it)
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    assert int(np.max(y1)) < 100


@pytest.mark.parametrize("case,match", [
    ("truncated", "corrupt or truncated"),
    ("bad_shape", r"expected \(N, 3072\)"),
    ("labels", r"labels out of range.*num_classes=10"),
    ("missing", "no CIFAR-100 data"),
])
def test_bad_cifar_data_is_a_clear_error(tmp_path, case, match):
    path = tmp_path / "c.tar.gz"
    if case != "missing":
        write_cifar100(path, truncate=case == "truncated", bad_shape=case == "bad_shape")
    else:
        path = tmp_path
    with pytest.raises(BenchInputError, match=match):
        load_data(_cfg(data="cifar100", data_dir=str(path), num_classes=10 if case == "labels" else None))



def test_a_data_set_is_one_module_found_by_scanning_the_package(tmp_path, monkeypatch):
    """A module defining DATA_SET in bench/data/sets/ is a --data choice with its own class count
    and reader; nothing else names it."""
    (tmp_path / "stripes.py").write_text(
        "import numpy as np\n"
        "from bench.data.sets import DataSet\n"
        "from bench.data.sets.split import Split\n"
        "def read(data_dir):\n"
        "    x = np.zeros((6, 4, 4, 3), np.uint8); x[:, ::2] = 255\n"
        "    return Split(x, np.arange(6, dtype=np.int32) % 3), Split(x[:3], np.arange(3, dtype=np.int32))\n"
        "DATA_SET = DataSet('stripes', classes=3, about='stripes', read=read, dir_help='any folder')\n")
    monkeypatch.setattr(data_sets, "__path__", [*data_sets.__path__, str(tmp_path)])
    found = data_sets._discover()
    assert list(found)[:3] == ["synthetic", "cifar100", "digits"] and found["stripes"].takes_dir
    for module in (schema, source):  # the two readers of the table this test reaches
        monkeypatch.setattr(module, "DATA_SETS", found)
    cfg = RunConfig(model="resnet18", data="stripes", image_size=4).resolved(has_gpu=False)
    assert cfg.num_classes == 3  # the natural class count is the module's
    src = source.read_data(cfg)
    assert src.train_size == 6 and src.test.images.shape == (3, 4, 4, 3)


def test_every_module_of_the_data_sets_package_declares_one_data_set():
    modules = {m.name for m in pkgutil.iter_modules(data_sets.__path__)} - {"split", "files", "records"}
    assert modules == set(data_sets.DATA_SETS)
    assert next(iter(data_sets.DATA_SETS)) == RunConfig(model="vgg11").data  # the default comes first
