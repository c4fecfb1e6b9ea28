"""Small data sets and runs for the tests of the jobs and the command line: random IDX images (fast to train on),
and a snapshot of a directory tree to check that nothing was written."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ppl_vae.cli import main
from ppl_vae.data import write_idx


def fake_idx_dataset(directory: Path, n_train: int = 60, n_test: int = 20, side: int = 28, test_side: int | None = None,
                     seed: int = 0) -> Path:
    """The four IDX files of an MNIST-like data set of random images in ``directory``."""
    g = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    test_side = side if test_side is None else test_side
    write_idx(directory / "train-images-idx3-ubyte.gz", torch.randint(0, 256, (n_train, side, side), generator=g, dtype=torch.uint8))
    write_idx(directory / "train-labels-idx1-ubyte", torch.randint(0, 10, (n_train,), generator=g, dtype=torch.uint8))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", torch.randint(0, 256, (n_test, test_side, test_side), generator=g,
                                                                    dtype=torch.uint8))
    write_idx(directory / "t10k-labels-idx1-ubyte", torch.randint(0, 10, (n_test,), generator=g, dtype=torch.uint8))
    return directory


@contextlib.contextmanager
def default_float32():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


def train_tiny(out: Path, data_dir: Path, *extra: str) -> str:
    """``ppl-vae train`` for one epoch of a 2-D VAE with a 16-unit MLP on the data set in ``data_dir``."""
    with default_float32():
        status = main(["train", "--out", str(out), "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1",
                       "--z-dim", "2", "--hidden", "16", "--batch-size", "20", "--quiet", *extra])
    assert status == 0
    return str(out)


def tree(path: Path) -> dict:
    """Every file and directory under ``path`` with its size and modification time (``{}`` if absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}
