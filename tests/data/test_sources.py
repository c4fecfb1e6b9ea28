from pathlib import Path

import pytest
import torch

from ppl_vae.data import DataError, find_dataset, load_raw, sources, write_idx

FULL = Path("/usr/share/datasets/fashion-mnist")


def _fake_dataset(directory: Path, n_train=12, n_test=5):
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte", torch.randint(0, 256, (n_train, 28, 28), dtype=torch.uint8))
    write_idx(directory / "train-labels-idx1-ubyte.gz", torch.randint(0, 10, (n_train,), dtype=torch.uint8))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", torch.randint(0, 256, (n_test, 28, 28), dtype=torch.uint8))
    write_idx(directory / "t10k-labels-idx1-ubyte", torch.randint(0, 10, (n_test,), dtype=torch.uint8))


def test_embedded_default_loads():
    raw = load_raw("fashion-mnist-small")
    assert raw.train_images.shape == (5000, 28, 28) and raw.test_images.shape == (1000, 28, 28)
    assert raw.train_labels.bincount().min() > 400  # all ten classes present
    assert (embedded_dir := sources.embedded_dir()) and (embedded_dir / "LICENSE").read_text().count("MIT") >= 1


def test_explicit_dir_and_env_var(tmp_path, monkeypatch):
    _fake_dataset(tmp_path / "explicit")
    _fake_dataset(tmp_path / "env" / "mnist", n_train=9)
    monkeypatch.setenv("PPL_VAE_DATA", str(tmp_path / "env"))
    assert load_raw("mnist", data_dir=tmp_path / "explicit", download=False).train_images.shape[0] == 12
    assert load_raw("mnist", download=False).train_images.shape[0] == 9


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_VAE_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "debian")
    with pytest.raises(FileNotFoundError) as info:
        find_dataset("mnist", download=False)
    message = str(info.value)
    assert str(tmp_path / "nothing") in message and str(tmp_path / "cache") in message
    assert "PPL_VAE_DATA" in message and "download not attempted" in message


def test_explicit_data_dir_is_the_only_place_looked(tmp_path, monkeypatch):
    """An explicit data_dir that is missing, or holds no dataset, is an error: no silent fallback to another copy
    (here one in $PPL_VAE_DATA), no download."""
    _fake_dataset(tmp_path / "env" / "mnist")
    monkeypatch.setenv("PPL_VAE_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match="Expected data_dir to be an existing directory, got '.*missing'"):
        load_raw("mnist", data_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Dataset 'mnist' not found") as info:
        load_raw("mnist", data_dir=tmp_path / "empty")
    assert str(tmp_path / "env") not in str(info.value) and "no fallback nor download" in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="Expected data_dir to be an existing directory"):
        load_raw("mnist", data_dir=tmp_path / "file")


def test_data_dir_with_the_embedded_dataset_is_refused(tmp_path):
    _fake_dataset(tmp_path)
    with pytest.raises(ValueError, match="Expected no data_dir with the embedded dataset 'fashion-mnist-small'"):
        load_raw("fashion-mnist-small", data_dir=tmp_path)


def test_unusable_files_are_data_errors_naming_the_file(tmp_path):
    _fake_dataset(tmp_path / "a")
    write_idx(tmp_path / "a" / "t10k-images-idx3-ubyte.gz", torch.zeros(5, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"Expected test images of the training images' size \(28, 28\), got \(32, 32\)"):
        load_raw("mnist", data_dir=tmp_path / "a")
    _fake_dataset(tmp_path / "b")
    write_idx(tmp_path / "b" / "t10k-labels-idx1-ubyte", torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: expected images .* equal to the 4 labels"):
        load_raw("mnist", data_dir=tmp_path / "b")
    _fake_dataset(tmp_path / "c")
    write_idx(tmp_path / "c" / "train-images-idx3-ubyte", torch.zeros(12, 28, 28, dtype=torch.int8))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: expected uint8 pixels"):
        load_raw("mnist", data_dir=tmp_path / "c")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar'"):
        find_dataset("cifar")


@pytest.mark.realdata
@pytest.mark.skipif(not FULL.is_dir(), reason="full Fashion-MNIST absent: apt-get install -y dataset-fashion-mnist")
def test_real_fashion_mnist_idx_files():
    raw = load_raw("fashion-mnist", download=False)
    assert raw.train_images.shape == (60000, 28, 28) and raw.test_images.shape == (10000, 28, 28)
    assert torch.equal(raw.train_labels.bincount(), torch.full((10,), 6000))
    small = load_raw("fashion-mnist-small")
    assert torch.equal(small.train_images, raw.train_images[:5000])  # the embedded subset is the real data
