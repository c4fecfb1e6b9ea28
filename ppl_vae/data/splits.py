"""Train/validation/test splits as flat float images, binarization, and batch loaders with indices.

Binarization (``binarize=``):

- ``"dynamic"``: each pixel intensity is the probability of a 1, re-sampled every time a batch is
  drawn (every epoch), as in Burda et al. (2015); evaluation splits are sampled once with a fixed seed.
- ``"static"``: sampled once with a fixed seed, for all splits.
- ``"threshold"``: ``x >= 0.5``, as Cremer et al. (2018)'s public reproduction does on Fashion-MNIST
  (needed to compare with their numbers).
- ``"none"``: continuous intensities in ``[0, 1]``.

Loaders yield ``(x, y, idx)``: ``x (B, D)`` float, ``y (B,)`` labels, ``idx (B,)`` positions of the
data points within their split (per-datapoint guides are indexed by them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .errors import DataError
from .sources import load_raw

__all__ = ["BINARIZATIONS", "ImageSet", "Splits", "check_images", "load_splits", "make_loader"]

BINARIZATIONS = ("dynamic", "static", "threshold", "none")


def check_images(x: torch.Tensor, dim: int | None = None, likelihood: str = "bernoulli", name: str = "x") -> torch.Tensor:
    """Validate a batch of images and return it flattened to ``(N, D)``.

    :param x: ``(N, D)`` or ``(N, H, W)`` float tensor.
    :param dim: the expected number of pixels ``D`` (``None``: any).
    :param likelihood: ``"bernoulli"`` requires values in ``[0, 1]``.
    :param str name: what ``x`` is, for the messages.
    :returns: ``x`` as ``(N, D)``.
    :raises DataError: naming the problem (type, shape, NaN/inf, range); a subclass of :class:`ValueError`.
    """
    if not isinstance(x, torch.Tensor):
        raise DataError(f"Expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.reshape(x.shape[0], -1)
    if x.dim() != 2:
        raise DataError(f"Expected {name} of shape (N, D) or (N, H, W), got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"Expected {name} with {dim} pixels per image, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise DataError(f"Expected {name} to be a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(-1).nonzero().flatten()[:5].tolist()
        raise DataError(f"{name} contains NaN or infinite pixels (first bad rows: {bad})")
    if likelihood == "bernoulli" and ((x < 0).any() or (x > 1).any()):
        raise DataError(
            f"{name} has pixels outside [0, 1] (min {x.min().item():.4g}, max {x.max().item():.4g}), "
            "which a Bernoulli likelihood cannot score; rescale the images to [0, 1]"
        )
    return x


@dataclass
class ImageSet:
    """One split: ``probs (N, D)`` intensities in [0, 1], ``labels (N,)``; ``dynamic`` re-samples binary pixels
    from ``probs`` on every draw, otherwise ``probs`` are the data."""

    probs: torch.Tensor
    labels: torch.Tensor
    dynamic: bool = False

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def x(self) -> torch.Tensor:
        """The fixed data ``(N, D)``; for a dynamically binarized split, one sample with a fixed seed."""
        if self.dynamic:
            g = torch.Generator(device=self.probs.device).manual_seed(0)
            return torch.bernoulli(self.probs, generator=g)
        return self.probs

    def to(self, device) -> ImageSet:
        return ImageSet(self.probs.to(device), self.labels.to(device), self.dynamic)


@dataclass
class Splits:
    train: ImageSet
    valid: ImageSet
    test: ImageSet
    name: str
    binarize: str
    source: str

    def to(self, device) -> Splits:
        return Splits(self.train.to(device), self.valid.to(device), self.test.to(device), self.name, self.binarize, self.source)


def _binarize(probs: torch.Tensor, how: str, seed: int) -> torch.Tensor:
    if how == "threshold":
        return (probs >= 0.5).to(probs.dtype)
    if how == "static":
        return torch.bernoulli(probs, generator=torch.Generator().manual_seed(seed))
    return probs


def load_splits(
    name: str = "fashion-mnist-small",
    data_dir=None,
    binarize: str = "dynamic",
    valid_size: int | float = 0.1,
    seed: int = 0,
    download: bool = True,
) -> Splits:
    """Load a dataset as train/validation/test :class:`ImageSet` s of flat images ``(N, H*W)``.

    :param str name: the dataset (see :func:`~ppl_vae.data.sources.find_dataset`).
    :param data_dir: the directory holding its IDX files (only there when given).
    :param binarize: one of ``"dynamic"``, ``"static"``, ``"threshold"``, ``"none"`` (see module docs).
    :param valid_size: number (int) or fraction (float) of training images held out for validation;
        the *last* ones, as in the usual 55k/5k split of the 60k training images.
    :param seed: seed of static binarization.
    :param bool download: try a torchvision download when the files are nowhere.
    :returns: the three splits.
    :raises ValueError: for an unknown binarization or dataset, or a ``valid_size`` that is not a count or fraction
        leaving training images.
    :raises DataError: for unusable files (see :func:`~ppl_vae.data.sources.load_raw`).
    :raises FileNotFoundError: if the files are not found.
    """
    if binarize not in BINARIZATIONS:
        raise ValueError(f"Unknown binarization {binarize!r}; expected one of {BINARIZATIONS}")
    raw = load_raw(name, data_dir, download)
    dtype = torch.get_default_dtype()
    train = raw.train_images.reshape(raw.train_images.shape[0], -1).to(dtype) / 255.0
    test = raw.test_images.reshape(raw.test_images.shape[0], -1).to(dtype) / 255.0
    n_valid = _valid_count(valid_size, len(train))
    n_train = len(train) - n_valid
    parts = {
        "train": (train[:n_train], raw.train_labels[:n_train]),
        "valid": (train[n_train:], raw.train_labels[n_train:]),
        "test": (test, raw.test_labels),
    }
    sets = {}
    for i, (split, (probs, labels)) in enumerate(parts.items()):
        if binarize == "dynamic" and split != "train":
            probs = _binarize(probs, "static", seed + 1000 + i)  # evaluation data stay fixed
        else:
            probs = _binarize(probs, binarize, seed + i)
        sets[split] = ImageSet(probs, labels, dynamic=(binarize == "dynamic" and split == "train"))
    return Splits(sets["train"], sets["valid"], sets["test"], name, binarize, raw.source)


def _valid_count(valid_size: int | float, num_train: int) -> int:
    if isinstance(valid_size, bool) or not isinstance(valid_size, (int, float)):
        raise ValueError(f"Expected valid_size to be a count (int) or a fraction (float), got {valid_size!r}")
    if isinstance(valid_size, float):
        if not 0.0 <= valid_size < 1.0:
            raise ValueError(f"Expected valid_size as a fraction in [0, 1), got {valid_size}")
        valid_size = int(round(valid_size * num_train))
    if not 0 <= valid_size < num_train:
        raise ValueError(f"Expected valid_size as a count in [0, {num_train}) (the training images), got {valid_size}: "
                         "it must leave training data")
    return valid_size


class _BatchDataset(Dataset):
    """Indexed by a list of positions; returns the whole batch at once (no per-item collation)."""

    def __init__(self, images: ImageSet, generator: torch.Generator | None):
        self.images, self.generator = images, generator

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx, device=self.images.probs.device)
        probs = self.images.probs[idx]
        if self.images.dynamic:
            probs = torch.bernoulli(probs, generator=self.generator)
        return probs, self.images.labels[idx], idx


def make_loader(images: ImageSet, batch_size: int = 100, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` of ``(x (B, D), y (B,), idx (B,))`` batches on the device of ``images``.

    Shuffling and dynamic binarization are driven by generators seeded with ``seed``, so a run is
    reproducible; the shuffle generator's state is saved in checkpoints by the trainer.

    :raises ValueError: if ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1, got {batch_size}")
    order = torch.Generator().manual_seed(seed)
    pixels = torch.Generator(device=images.probs.device).manual_seed(seed + 1)
    sampler = RandomSampler(range(len(images)), generator=order) if shuffle else SequentialSampler(range(len(images)))
    loader = DataLoader(
        _BatchDataset(images, pixels), sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None
    )
    loader.generators = (order, pixels)
    return loader
