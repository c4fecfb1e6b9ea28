import gzip
import shutil

import pytest
import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from ppl_vae.data import DataError, read_idx, write_idx
from ppl_vae.data.sources import embedded_dir


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_roundtrip(tmp_path, suffix):
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    path = tmp_path / f"images-idx3-ubyte{suffix}"
    write_idx(path, images)
    assert torch.equal(read_idx(path), images)


def test_matches_torchvision_reader_on_real_file(tmp_path):
    plain = tmp_path / "t10k-images-idx3-ubyte"
    with gzip.open(embedded_dir() / "t10k-images-idx3-ubyte.gz") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    ours, theirs = read_idx(plain), read_sn3_pascalvincent_tensor(str(plain))
    assert ours.shape == (1000, 28, 28) and ours.dtype == torch.uint8
    assert torch.equal(ours, theirs)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, torch.zeros(4, 28, 28, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"hello world, not idx")
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="Could not read IDX file"):
        read_idx(path)


@pytest.mark.parametrize("offset", [22, 24, 30])
def test_corrupt_deflate_stream_is_a_data_error(tmp_path, offset):
    """A byte flipped inside the compressed stream: zlib.error (22, 24) or a CRC failure (30), all reported."""
    path = tmp_path / "x-idx3-ubyte.gz"
    write_idx(path, torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"Could not read IDX file '{path}'"):
        read_idx(path)
