"""Finding the real image datasets on disk (or downloading them) in the standard IDX layout.

Search order for a dataset ``name`` (``"mnist"`` or ``"fashion-mnist"``):

1. an explicit ``data_dir`` argument (``--data-dir`` on the command line): then *only* there, with no fallback
   to another copy and no download, so that the data a run uses are the data asked for;
2. the directory in ``$PPL_VAE_DATA``;
3. the user cache ``~/.cache/ppl_vae`` (or ``$XDG_CACHE_HOME/ppl_vae``);
4. the Debian dataset packages' location ``/usr/share/datasets`` (``apt-get install dataset-fashion-mnist``);
5. a torchvision download into the user cache, when the network allows.

In each directory the four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``) are looked for
directly, in ``<dir>/<name>/``, and in torchvision's ``<dir>/<Class>/raw/``.

``"fashion-mnist-small"`` is the embedded default: 5,000 training and 1,000 test images of
Fashion-MNIST shipped inside the package (MIT licence, notice beside the files), so that the
quick start works offline.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError
from .idx import read_idx

__all__ = ["DATASETS", "RawDataset", "find_dataset", "load_raw", "embedded_dir"]

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# dataset name -> torchvision class name
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "fashion-mnist-small": None}
DEBIAN_DIR = Path("/usr/share/datasets")
HOW_TO_GET = {
    "fashion-mnist": "`apt-get install -y dataset-fashion-mnist` (Debian), or download the four IDX files from "
    "https://github.com/zalandoresearch/fashion-mnist into a directory and pass --data-dir or set PPL_VAE_DATA",
    "mnist": "download the four IDX files from http://yann.lecun.com/exdb/mnist/ (or any mirror) into a "
    "directory and pass --data-dir or set PPL_VAE_DATA",
}


@dataclass(frozen=True)
class RawDataset:
    """Images and labels as stored: ``train_images (N, 28, 28) uint8``, ``train_labels (N,) int64``,
    ``test_images (M, 28, 28) uint8``, ``test_labels (M,) int64``; ``source`` is where they came from."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str


def embedded_dir() -> Path:
    return Path(__file__).parent / "embedded" / "fashion-mnist-small"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ppl_vae"


def _files_in(directory: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _candidates(name: str, directory: Path) -> list[Path]:
    out = [directory, directory / name]
    if DATASETS.get(name):
        out.append(directory / DATASETS[name] / "raw")
    return out


def find_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> dict[str, Path]:
    """Locate the four IDX files of ``name``; returns ``{"train_images": path, ...}``.

    :param str name: one of :data:`DATASETS`.
    :param data_dir: the directory to look in, and the only one when given (see the module docs).
    :param bool download: try a torchvision download when the files are nowhere (not with ``data_dir``).
    :returns: the path of each of the four files.
    :raises ValueError: for an unknown name, or a ``data_dir`` with the embedded ``fashion-mnist-small``.
    :raises FileNotFoundError: if ``data_dir`` is not a directory, or naming every place looked and how to get the data.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    if data_dir is not None and name == "fashion-mnist-small":
        raise ValueError(f"Expected no data_dir with the embedded dataset 'fashion-mnist-small', got {str(data_dir)!r}: "
                         "pass the dataset the directory holds (mnist or fashion-mnist)")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise FileNotFoundError(f"Expected data_dir to be an existing directory, got {str(data_dir)!r}")
    if name == "fashion-mnist-small":
        files = _files_in(embedded_dir())
        if files is None:
            raise FileNotFoundError(f"The embedded dataset is missing from {embedded_dir()}: reinstall ppl_vae")
        return files
    if data_dir is not None:  # asked for: no fallback to another copy
        roots, download = [Path(data_dir)], False
    else:
        roots = [Path(os.environ["PPL_VAE_DATA"])] if os.environ.get("PPL_VAE_DATA") else []
        roots += [cache_dir(), DEBIAN_DIR]
    looked = []
    for root in roots:
        for directory in _candidates(name, root):
            looked.append(str(directory))
            files = _files_in(directory)
            if files is not None:
                return files
    download_error = "download not attempted" if data_dir is None else "no fallback nor download with an explicit data_dir"
    if download:
        try:
            import torchvision

            getattr(torchvision.datasets, DATASETS[name])(root=str(cache_dir()), train=True, download=True)
            getattr(torchvision.datasets, DATASETS[name])(root=str(cache_dir()), train=False, download=True)
            files = _files_in(cache_dir() / DATASETS[name] / "raw")
            if files is not None:
                return files
            download_error = "torchvision reported success but the IDX files are not in its raw folder"
        except Exception as e:  # network errors come in many types (URLError, RuntimeError, OSError)
            download_error = f"torchvision download failed: {type(e).__name__}: {e}"
    raise FileNotFoundError(
        f"Dataset {name!r} not found. Looked for its IDX files ({', '.join(FILES.values())}, optionally .gz) in: "
        f"{'; '.join(looked)}; {download_error}. To get it: {HOW_TO_GET[name]}."
    )


def load_raw(name: str = "fashion-mnist-small", data_dir=None, download: bool = True) -> RawDataset:
    """Load a dataset's images and labels as stored (see :func:`find_dataset` for where it looks).

    :param str name: one of :data:`DATASETS`.
    :param data_dir: the directory holding the IDX files (only there when given).
    :param bool download: try a torchvision download when the files are nowhere.
    :returns: the :class:`RawDataset`.
    :raises DataError: naming the file, for a corrupt or truncated file, images that are not ``uint8`` ``(N, H, W)``
        with ``N`` labels, or test images of another size than the training images.
    :raises FileNotFoundError: if the files are not found (see :func:`find_dataset`).
    :raises ValueError: for an unknown name.
    """
    files = find_dataset(name, data_dir, download)
    tensors = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = tensors[f"{split}_images"], tensors[f"{split}_labels"]
        if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{files[f'{split}_images']}: expected images (N, H, W) with N equal to the {labels.shape[0]} "
                f"labels of {files[f'{split}_labels']}, got images of shape {tuple(images.shape)} and labels of shape "
                f"{tuple(labels.shape)}"
            )
        if images.dtype != torch.uint8:
            raise DataError(f"{files[f'{split}_images']}: expected uint8 pixels (0-255), got {images.dtype}")
    train_size, test_size = tuple(tensors["train_images"].shape[1:]), tuple(tensors["test_images"].shape[1:])
    if train_size != test_size:
        raise DataError(
            f"Expected test images of the training images' size {train_size}, got {test_size} in "
            f"{files['test_images']} (training images: {files['train_images']})"
        )
    return RawDataset(
        name,
        tensors["train_images"],
        tensors["train_labels"].long(),
        tensors["test_images"],
        tensors["test_labels"].long(),
        source=str(files["train_images"].parent),
    )
