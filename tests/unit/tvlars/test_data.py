"""tvlars.data against tiny files written in the datasets' published formats (no mocks, nothing downloaded)."""

import pickle
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

from tvlars import data as tdata
from tvlars.data import ArrayDataset, DatasetNotFoundError, list_datasets, load_dataset

# --- fabricating the published formats ------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the CIFAR files: every string a byte string, numpy under numpy.core."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_byte_string(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_byte_string
    dispatch[str] = save_byte_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def _write_py2_pickle(path, obj):
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _cifar_images(start, n):
    """n images whose R, G, B planes are filled with 3k, 3k+1, 3k+2 (k = start + i) and pixel (1, 2) of R is 255."""
    assert 3 * (start + n) < 255, "plane values must fit in uint8"
    k = np.arange(start, start + n)
    x = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for c in range(3):
        x[:, c] = (3 * k + c)[:, None, None]
    x[:, 0, 1, 2] = 255
    return x.reshape(n, 3072)  # rows: 1024 R, 1024 G, 1024 B, each plane row-major


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 4


@pytest.fixture
def cifar10_root(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for b in range(5):
        start = b * PER_BATCH
        batch = {
            "batch_label": f"training batch {b + 1} of 5",
            "labels": [(start + i) % 10 for i in range(PER_BATCH)],
            "data": _cifar_images(start, PER_BATCH),
            "filenames": [f"img_{start + i}.png" for i in range(PER_BATCH)],
        }
        _write_py2_pickle(base / f"data_batch_{b + 1}", batch)
    test = {"batch_label": "testing batch 1 of 1", "labels": [9, 8, 7], "data": _cifar_images(50, 3)}
    test["filenames"] = ["t0.png", "t1.png", "t2.png"]
    _write_py2_pickle(base / "test_batch", test)
    _write_py2_pickle(base / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": PER_BATCH})
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    fine = [f"fine_{i}" for i in range(100)]
    coarse = [f"coarse_{i}" for i in range(20)]
    # Written by Python 3 with bytes keys (as if re-saved): loads to the same dict as the original Python 2 files.
    for split, start, n in (("train", 0, 6), ("test", 60, 2)):
        obj = {
            b"filenames": [b"x.png"] * n,
            b"batch_label": split.encode(),
            b"fine_labels": [(start + 17 * i) % 100 for i in range(n)],
            b"coarse_labels": [(start + 17 * i) % 100 // 5 for i in range(n)],
            b"data": _cifar_images(start, n),
        }
        (base / split).write_bytes(pickle.dumps(obj, protocol=4))
    meta = {b"fine_label_names": [s.encode() for s in fine], b"coarse_label_names": [s.encode() for s in coarse]}
    (base / "meta").write_bytes(pickle.dumps(meta, protocol=4))
    return tmp_path


# wnids.txt order, deliberately not sorted: label index = line number.
TINY_WNIDS = ["n01641577", "n01443537", "n01629819"]
TINY_COLOURS = {"n01641577": (200, 30, 30), "n01443537": (30, 200, 30), "n01629819": (30, 30, 200)}
TINY_WORDS = {"n01641577": "bullfrog, Rana catesbeiana", "n01443537": "goldfish, Carassius auratus"}
GRAY = 100


def _jpeg(path, colour=None, gray=None):
    from PIL import Image

    img = Image.new("L", (64, 64), gray) if gray is not None else Image.new("RGB", (64, 64), colour)
    img.save(path, format="JPEG", quality=95)


@pytest.fixture
def tiny_root(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    # words.txt covers all of ImageNet in the real set; the third wnid is left out to test the fallback.
    words = {"n00001740": "entity", **TINY_WORDS}
    (base / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in words.items()))
    for wnid in TINY_WNIDS:
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for i in range(2):
            gray = GRAY if (wnid, i) == ("n01629819", 1) else None
            _jpeg(images / f"{wnid}_{i}.JPEG", TINY_COLOURS[wnid], gray)
    (base / "val" / "images").mkdir(parents=True)
    val = [("val_2.JPEG", "n01629819"), ("val_0.JPEG", "n01443537"), ("val_1.JPEG", "n01641577")]
    for fname, wnid in val:
        _jpeg(base / "val" / "images" / fname, TINY_COLOURS[wnid])
    (base / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in val))
    return tmp_path


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch):
    # Isolate from a developer's TVLARS_DATA_DIR: nothing here reads or writes real data.
    monkeypatch.delenv("TVLARS_DATA_DIR", raising=False)


# --- registry and options -------------------------------------------------------------------------------------------


def test_list_datasets():
    built_in = [e.name for e in tdata.DATASETS.loaded() if e.source == "built-in"]
    assert built_in == ["cifar10", "cifar100", "digits", "mnist1d", "synthetic", "tinyimagenet"]
    assert set(built_in) <= set(list_datasets())  # and any installed plugins'
    assert list_datasets() == sorted(list_datasets())


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match=r"dataset 'imagenet' is not installed on host \S+ \(installed: cifar10"):
        load_dataset("imagenet")


@pytest.mark.parametrize(
    ("name", "options", "accepted"),
    [("synthetic", {"n_trian": 5}, "n_train"), ("cifar10", {"label": "fine"}, "none"), ("mnist1d", {"x": 1}, "seed")],
)
def test_unknown_option_names_it(name, options, accepted):
    bad = next(iter(options))
    with pytest.raises(ValueError, match=rf"Unknown option\(s\) for dataset '{name}': {bad} \(accepted: .*{accepted}"):
        load_dataset(name, **options)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("synthetic", {"n_train": 0}),
        ("synthetic", {"image_size": 2.5}),
        ("digits", {"test_fraction": 1.0}),
        ("mnist1d", {"num_samples": True}),
    ],
)
def test_invalid_option_values(name, options):
    with pytest.raises(ValueError, match=rf"Invalid {next(iter(options))}"):
        load_dataset(name, **options)


def test_data_dir_resolution(monkeypatch, tmp_path):
    assert tdata.data_dir() is None
    monkeypatch.setenv("TVLARS_DATA_DIR", "")
    assert tdata.data_dir() is None
    monkeypatch.setenv("TVLARS_DATA_DIR", str(tmp_path))
    assert tdata.data_dir() == tmp_path
    assert tdata.data_dir(tmp_path / "other") == tmp_path / "other"


def test_import_pulls_in_no_optional_packages():
    code = "import sys, tvlars.data; print(sorted(m for m in ('PIL', 'sklearn', 'mnist1d') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- CIFAR ----------------------------------------------------------------------------------------------------------


def test_cifar10_reads_python2_batches(cifar10_root):
    ds = load_dataset("cifar10", data_dir=cifar10_root)
    assert ds.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (3, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.is_uint8 and ds.num_classes == 10
    assert ds.classes == tuple(CIFAR10_NAMES)
    assert ds.train_y.dtype == np.int64
    np.testing.assert_array_equal(ds.train_y, np.arange(20) % 10)  # batches in order 1..5
    np.testing.assert_array_equal(ds.test_y, [9, 8, 7])
    # Channel order and row-major planes: image k has planes 3k, 3k+1, 3k+2 and R[1, 2] = 255.
    for split_x, first in ((ds.train_x, 0), (ds.test_x, 50)):
        for i, img in enumerate(split_x):
            k = first + i
            assert img[0, 0, 0] == 3 * k and img[1, 5, 7] == 3 * k + 1 and img[2, 31, 31] == 3 * k + 2
            assert img[0, 1, 2] == 255 and img[0, 2, 1] == 3 * k
    expected = ds.train_x.astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, expected.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(ds.std, expected.std(axis=(0, 2, 3)))
    assert all(type(v) is float for v in ds.mean + ds.std)


def test_cifar10_from_env(cifar10_root, monkeypatch):
    monkeypatch.setenv("TVLARS_DATA_DIR", str(cifar10_root))
    assert len(load_dataset("cifar10").train_x) == 20


def test_cifar100_fine_and_coarse(cifar100_root):
    fine = load_dataset("cifar100", data_dir=cifar100_root)
    assert fine.train_x.shape == (6, 3, 32, 32) and fine.test_x.shape == (2, 3, 32, 32)
    assert fine.num_classes == 100 and fine.classes[3] == "fine_3"
    np.testing.assert_array_equal(fine.train_y, [17 * i % 100 for i in range(6)])
    np.testing.assert_array_equal(fine.test_y, [60, 77])
    assert fine.test_x[1, 2, 0, 0] == 3 * 61 + 2 and fine.test_x[1, 0, 1, 2] == 255  # test image k = 61
    coarse = load_dataset("cifar100", data_dir=cifar100_root, label="coarse")
    assert coarse.num_classes == 20 and coarse.classes[-1] == "coarse_19"
    np.testing.assert_array_equal(coarse.train_y, fine.train_y // 5)
    np.testing.assert_array_equal(coarse.train_x, fine.train_x)
    with pytest.raises(ValueError, match="Invalid label: 'medium'"):
        load_dataset("cifar100", data_dir=cifar100_root, label="medium")


def test_cifar_refuses_pickled_code(cifar100_root):
    # eval, not print: once Ray is imported in the test session, builtins.print is Ray's tqdm-safe print
    (cifar100_root / "cifar-100-python" / "meta").write_bytes(pickle.dumps({b"fine_label_names": eval}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.eval"):
        load_dataset("cifar100", data_dir=cifar100_root)


def test_cifar10_names_the_missing_batch(cifar10_root):
    missing = cifar10_root / "cifar-10-batches-py" / "data_batch_5"
    missing.unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", data_dir=cifar10_root)
    message = str(info.value)
    assert str(missing) in message
    assert "CIFAR-10 python version" in message and "https://www.cs.toronto.edu/~kriz/cifar.html" in message


# --- missing data ---------------------------------------------------------------------------------------------------

FILE_BACKED = [
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"),
    ("tinyimagenet", "tiny-imagenet-200"),
]


@pytest.mark.parametrize(("name", "folder"), FILE_BACKED)
def test_empty_data_dir_names_the_expected_path(name, folder, tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, data_dir=tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / folder) in str(info.value)
    assert "never downloads" in str(info.value)


@pytest.mark.parametrize(("name", "folder"), FILE_BACKED)
def test_no_data_dir_configured_says_set_tvlars_data_dir(name, folder):
    with pytest.raises(DatasetNotFoundError, match="set TVLARS_DATA_DIR") as info:
        load_dataset(name)
    assert folder in str(info.value)


# --- Tiny-ImageNet --------------------------------------------------------------------------------------------------


def test_tinyimagenet_decodes_then_loads_from_cache(tiny_root):
    base = tiny_root / "tiny-imagenet-200"
    ds = load_dataset("tinyimagenet", data_dir=tiny_root)
    assert ds.train_x.shape == (6, 3, 64, 64) and ds.test_x.shape == (3, 3, 64, 64) and ds.is_uint8
    # Labels follow wnids.txt; train files sorted within each class; val sorted by file name.
    np.testing.assert_array_equal(ds.train_y, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.test_y, [1, 0, 2])  # val_0: n01443537, val_1: n01641577, val_2: n01629819
    assert ds.classes == ("bullfrog, Rana catesbeiana", "goldfish, Carassius auratus", "n01629819")
    # RGB order survives decoding (JPEG is lossy: compare with a tolerance).
    for img, label in zip(ds.train_x[:5], ds.train_y[:5], strict=True):
        colour = TINY_COLOURS[TINY_WNIDS[label]]
        np.testing.assert_allclose(img.reshape(3, -1).mean(axis=1), colour, atol=3)
    gray = ds.train_x[5].astype(int)  # n01629819_1.JPEG, a one-channel JPEG
    assert np.abs(gray - GRAY).max() <= 3
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()

    cache = base / ".tvlars-cache-v1.npz"
    assert cache.is_file()
    (base / "train" / TINY_WNIDS[0] / "images" / f"{TINY_WNIDS[0]}_0.JPEG").unlink()
    again = load_dataset("tinyimagenet", data_dir=tiny_root)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(again, field), getattr(ds, field))
    assert again.classes == ds.classes and again.mean == ds.mean and again.std == ds.std


def test_tinyimagenet_rebuilds_a_corrupt_cache(tiny_root):
    cache = tiny_root / "tiny-imagenet-200" / ".tvlars-cache-v1.npz"
    cache.write_bytes(b"not a zip file")
    assert load_dataset("tinyimagenet", data_dir=tiny_root).train_x.shape == (6, 3, 64, 64)
    with np.load(cache) as f:
        assert f["train_x"].shape == (6, 3, 64, 64)


def test_tinyimagenet_works_when_the_cache_cannot_be_written(tiny_root):
    # A directory in the cache file's place makes the final rename fail even for root (tests may run as root).
    cache = tiny_root / "tiny-imagenet-200" / ".tvlars-cache-v1.npz"
    cache.mkdir()
    with pytest.warns(RuntimeWarning, match="could not write cache"):
        ds = load_dataset("tinyimagenet", data_dir=tiny_root)
    assert ds.train_x.shape == (6, 3, 64, 64)
    assert [p.name for p in cache.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_tinyimagenet_names_missing_pieces(tiny_root):
    base = tiny_root / "tiny-imagenet-200"
    (base / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(DatasetNotFoundError, match="val_1.JPEG"):
        load_dataset("tinyimagenet", data_dir=tiny_root)
    (base / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("tinyimagenet", data_dir=tiny_root)
    assert str(base / "val" / "val_annotations.txt") in str(info.value)


# --- datasets without files -----------------------------------------------------------------------------------------


def test_mnist1d_defaults():
    ds = load_dataset("mnist1d")
    assert ds.train_x.shape == (4000, 1, 40) and ds.test_x.shape == (1000, 1, 40)
    assert ds.train_x.dtype == np.float32 and not ds.is_uint8 and ds.input_shape == (1, 40)
    assert ds.num_classes == 10 and ds.classes[7] == "7"
    assert set(np.unique(ds.train_y)) == set(range(10))
    np.testing.assert_allclose(ds.mean, [ds.train_x.astype(np.float64).mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [ds.train_x.astype(np.float64).std()], rtol=1e-6)


def test_mnist1d_seeded_and_isolated():
    state = np.random.get_state()[1].copy()
    first = load_dataset("mnist1d", num_samples=500, seed=1)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # mnist1d reseeds numpy; we restore it
    first.train_x[:] = 0  # callers get copies: the in-process cache is unaffected
    tdata._generate_mnist1d.cache_clear()
    again = load_dataset("mnist1d", num_samples=500, seed=1)
    cached = load_dataset("mnist1d", num_samples=500, seed=1)
    other = load_dataset("mnist1d", num_samples=500, seed=2)
    assert again.train_x.shape == (400, 1, 40)
    np.testing.assert_array_equal(again.train_x, cached.train_x)
    np.testing.assert_array_equal(again.train_y, cached.train_y)
    assert not np.array_equal(again.train_x, other.train_x)


def test_mnist1d_disk_cache_in_data_dir(tmp_path):
    ds = load_dataset("mnist1d", data_dir=tmp_path, num_samples=200, seed=3)
    (cache,) = (tmp_path / "mnist1d").glob("*-n200-s3.npz")
    tdata._generate_mnist1d.cache_clear()
    again = load_dataset("mnist1d", data_dir=tmp_path, num_samples=200, seed=3)
    assert tdata._generate_mnist1d.cache_info().misses == 0  # served from the file, not regenerated
    np.testing.assert_array_equal(again.test_x, ds.test_x)
    assert cache.is_file()


def test_digits_split():
    ds = load_dataset("digits")
    assert len(ds.train_x) + len(ds.test_x) == 1797
    assert ds.train_x.shape[1:] == (1, 8, 8) and ds.train_x.dtype == np.float32
    assert 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0 and ds.test_x.max() <= 1.0
    assert len(ds.test_x) == pytest.approx(0.2 * 1797, abs=5)
    train_counts, test_counts = np.bincount(ds.train_y), np.bincount(ds.test_y)
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.01)  # stratified
    np.testing.assert_array_equal(load_dataset("digits").test_y, ds.test_y)
    assert not np.array_equal(load_dataset("digits", seed=1).test_y, ds.test_y)


def test_synthetic_shapes_follow_options():
    ds = load_dataset("synthetic", n_train=100, n_test=40, image_size=16, channels=1, num_classes=4, seed=5)
    assert ds.train_x.shape == (100, 1, 16, 16) and ds.test_x.shape == (40, 1, 16, 16)
    assert ds.train_x.dtype == np.uint8 and ds.classes == ("class_0", "class_1", "class_2", "class_3")
    np.testing.assert_array_equal(np.bincount(ds.train_y), [25] * 4)  # balanced
    np.testing.assert_array_equal(
        load_dataset("synthetic", n_train=100, n_test=40, image_size=16, channels=1, num_classes=4, seed=5).train_x,
        ds.train_x,
    )


def test_synthetic_is_learnable():
    ds = load_dataset("synthetic")
    assert ds.train_x.shape == (2048, 3, 32, 32) and ds.test_x.shape == (512, 3, 32, 32)
    train = ds.train_x.reshape(len(ds.train_x), -1).astype(np.float32)
    test = ds.test_x.reshape(len(ds.test_x), -1).astype(np.float32)
    class_means = np.stack([train[ds.train_y == c].mean(axis=0) for c in range(ds.num_classes)])
    dist = (test**2).sum(1, keepdims=True) - 2 * test @ class_means.T + (class_means**2).sum(1)
    assert (dist.argmin(axis=1) == ds.test_y).mean() > 0.9


# --- ArrayDataset ---------------------------------------------------------------------------------------------------


def _tiny_dataset(**changes):
    fields = dict(
        name="t",
        train_x=np.zeros((4, 1, 5), np.float32),
        train_y=np.array([0, 1, 0, 1]),
        test_x=np.zeros((2, 1, 5), np.float32),
        test_y=np.array([1, 0]),
        classes=("a", "b"),
        mean=(0.0,),
        std=(1.0,),
    )
    return ArrayDataset(**{**fields, **changes})


def test_array_dataset_checks_and_repr():
    ds = _tiny_dataset()
    assert ds.input_shape == (1, 5) and ds.num_classes == 2 and not ds.is_uint8
    assert repr(ds) == "ArrayDataset(name='t', train=4, test=2, input_shape=(1, 5), dtype=float32, num_classes=2)"
    with pytest.raises(ValueError, match="labels outside"):
        _tiny_dataset(test_y=np.array([2, 0]))
    with pytest.raises(ValueError, match="differ in shape"):
        _tiny_dataset(test_x=np.zeros((2, 1, 6), np.float32))
    with pytest.raises(ValueError, match="one value per channel"):
        _tiny_dataset(mean=(0.0, 0.0))
    with pytest.raises(ValueError, match="int64"):
        _tiny_dataset(train_y=np.array([0, 1, 0, 1], dtype=np.int32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds != _tiny_dataset() and ds == ds  # identity equality, no elementwise array comparison
