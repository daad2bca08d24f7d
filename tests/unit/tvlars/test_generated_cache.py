"""Generated datasets (MNIST-1D) are cached on disk without a data directory too, so that each new process (a trial
runner, a worker) loads them in milliseconds instead of generating them for seconds."""

from __future__ import annotations

import numpy as np

from tvlars import data as tdata
from tvlars.data import load_dataset


def test_mnist1d_is_cached_in_the_cache_dir_without_a_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("TVLARS_DATA_DIR", raising=False)
    monkeypatch.setenv("TVLARS_CACHE_DIR", str(tmp_path / "cache"))
    first = load_dataset("mnist1d", num_samples=300, seed=5)
    (cache,) = (tmp_path / "cache" / "mnist1d").glob("*-n300-s5.npz")
    tdata._generate_mnist1d.cache_clear()
    again = load_dataset("mnist1d", num_samples=300, seed=5)
    assert tdata._generate_mnist1d.cache_info().misses == 0  # read from the file, not generated again
    np.testing.assert_array_equal(again.train_x, first.train_x)
    np.testing.assert_array_equal(again.test_y, first.test_y)
    assert cache.is_file()


def test_the_default_cache_dir_follows_xdg_and_an_empty_setting_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.delenv("TVLARS_DATA_DIR", raising=False)
    monkeypatch.delenv("TVLARS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_dataset("mnist1d", num_samples=200, seed=6)
    assert len(list((tmp_path / "xdg" / "tvlars" / "mnist1d").glob("*-n200-s6.npz"))) == 1

    monkeypatch.setenv("TVLARS_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "off"))
    tdata._generate_mnist1d.cache_clear()
    load_dataset("mnist1d", num_samples=200, seed=7)
    assert not (tmp_path / "off").exists()
