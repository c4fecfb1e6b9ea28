"""What a job reads: a run (loaded from its directory when given as a path) and data points of one of its splits,
checked against the run's model before any work starts."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ppl_vae.data import DataError, ImageSet
from ppl_vae.runs import Run, load_run

__all__ = ["as_run", "split_data", "first_points", "require_vae", "SPLITS"]

SPLITS = ("train", "valid", "test")


def as_run(run: Run | str | os.PathLike, device: str = "cpu") -> Run:
    """``run`` itself, or the run loaded from the directory ``run`` onto ``device``.

    :param run: a :class:`~ppl_vae.runs.Run` or its directory.
    :param str device: where to load it (ignored for a loaded run).
    :returns: the run.
    :raises CheckpointError: for a missing, truncated or foreign checkpoint.
    """
    return run if isinstance(run, Run) else load_run(Path(run), device)


def split_data(run: Run, split: str) -> ImageSet:
    """The run's ``split``, checked: not empty, and images of the size the run's model was trained on.

    :param run: the run.
    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :returns: the split's :class:`~ppl_vae.data.ImageSet`.
    :raises ValueError: for an unknown or empty split.
    :raises DataError: if the split's images have another size than the model's ``x_dim`` (the data changed since
        training).
    """
    if split not in SPLITS:
        raise ValueError(f"Expected split in {SPLITS}, got {split!r}")
    splits = run.splits()
    data = getattr(splits, split)
    if len(data) == 0:
        raise ValueError(f"The {split} split of {run.path} is empty (the run was trained with valid_size="
                         f"{run.config.valid_size}): choose another split")
    x_dim = getattr(run.model, "x_dim", None)
    if isinstance(x_dim, int) and data.probs.shape[1] != x_dim:
        raise DataError(f"Expected {split} images of {x_dim} pixels (what the run's model was trained on), got "
                        f"{data.probs.shape[1]} pixels per image in {splits.source}")
    return data


def first_points(data: ImageSet, n: int | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` points of a split (all when ``n`` is ``None``) and their indices.

    :param data: the split.
    :param n: how many points, ``1 <= n <= len(data)``, or ``None``.
    :param str split: its name, for the message.
    :returns: ``x (n, D)`` and ``idx (n,)``.
    :raises ValueError: if ``n`` is out of range.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(data)):
        raise ValueError(f"Expected n in [1, {len(data)}] (the {split} split's size), got {n!r}")
    n = len(data) if n is None else n
    return data.x[:n], torch.arange(n, device=data.x.device)


def require_vae(run: Run, job: str) -> None:
    """Refuse a job that needs a VAE (a density with a latent posterior) on another model of the zoo.

    :param run: the run.
    :param str job: what was asked, for the message.
    :raises ValueError: if the run's model is not ``"vae"``.
    """
    if run.config.model != "vae":
        raise ValueError(f"{job} needs a VAE, whose ELBO bounds log p(x); the run's model is {run.config.model!r}")
