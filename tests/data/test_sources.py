from pathlib import Path

import pytest
import torch

from ppl_vae.data import find_dataset, load_raw, sources, write_idx

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
        find_dataset("mnist", data_dir=tmp_path / "explicit", download=False)
    message = str(info.value)
    assert str(tmp_path / "explicit") in message and str(tmp_path / "nothing") in message
    assert "PPL_VAE_DATA" in message and "download not attempted" in message


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
