"""What a job reads: a run (loaded from its directory when given as a path) and data points of one of its splits,
checked against the run's model before any work starts."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ppl_vae.data import DataError, ImageSet
from ppl_vae.runs import Run, load_run

__all__ = ["as_run", "split_data", "first_points", "point_range", "shard_range", "select_points", "range_suffix",
           "require_vae", "SPLITS"]

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


def shard_range(start: int, stop: int, shard: tuple[int, int]) -> tuple[int, int]:
    """The points of shard ``i`` of ``K`` of ``start:stop``: ``K`` contiguous ranges whose sizes differ by at most
    one, in order (shard 0 first).

    :param int start: the first point.
    :param int stop: one past the last point.
    :param shard: ``(i, K)`` with ``0 <= i < K``.
    :returns: ``(a, b)``.
    :raises ValueError: if ``shard`` is not ``(i, K)`` with ``0 <= i < K``, or there are fewer points than shards.
    """
    if len(shard) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard) or \
            not 0 <= shard[0] < shard[1]:
        raise ValueError(f"Expected shard (i, K) with 0 <= i < K, got {tuple(shard)!r}")
    i, k = shard
    if stop - start < k:
        raise ValueError(f"Expected at least as many points as shards, got {stop - start} points ({start}:{stop}) for "
                         f"{k} shards (--shard's K, or the number of torchrun processes)")
    n = stop - start
    return start + i * n // k, start + (i + 1) * n // k


def point_range(size: int, n: int | None = None, points: tuple[int, int] | None = None,
                shard: tuple[int, int] | None = None, split: str = "split") -> tuple[int, int]:
    """The range ``a:b`` of a split's points a job measures: the first ``n`` (all when ``None``) or ``points``
    (``(a, b)``: points ``a`` to ``b - 1``), then shard ``i`` of ``K`` of those (:func:`shard_range`).

    :param int size: the split's size.
    :param n: the first ``n`` points, or ``None``.
    :param points: ``(a, b)`` with ``0 <= a < b <= size``, or ``None``; not with ``n``.
    :param shard: ``(i, K)`` or ``None``.
    :param str split: its name, for the messages.
    :returns: ``(a, b)``.
    :raises ValueError: for ``n`` and ``points`` together, or either out of range, or a bad shard.
    """
    if points is not None:
        if n is not None:
            raise ValueError(f"Expected either n or points, got n={n!r} and points={tuple(points)!r}")
        if len(points) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in points) or \
                not 0 <= points[0] < points[1] <= size:
            raise ValueError(f"Expected points (a, b) with 0 <= a < b <= {size} (the {split} split's size), got "
                             f"{tuple(points)!r}")
        a, b = points
    else:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= size):
            raise ValueError(f"Expected n in [1, {size}] (the {split} split's size), got {n!r}")
        a, b = 0, size if n is None else n
    return (a, b) if shard is None else shard_range(a, b, shard)


def select_points(data: ImageSet, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``start`` to ``stop - 1`` of a split and their indices in it.

    :param data: the split.
    :param int start: the first point.
    :param int stop: one past the last.
    :returns: ``x (stop - start, D)`` and ``idx (stop - start,)``.
    """
    return data.x[start:stop], torch.arange(start, stop, device=data.x.device)


def range_suffix(start: int, stop: int) -> str:
    """The part of a shard report's file names that says which points it holds: ``_points_<start>-<stop>``."""
    return f"_points_{start}-{stop}"


def require_vae(run: Run, job: str) -> None:
    """Refuse a job that needs a VAE (a density with a latent posterior) on another model of the zoo.

    :param run: the run.
    :param str job: what was asked, for the message.
    :raises ValueError: if the run's model is not ``"vae"``.
    """
    if run.config.model != "vae":
        raise ValueError(f"{job} needs a VAE, whose ELBO bounds log p(x); the run's model is {run.config.model!r}")


def read_report(path: str | os.PathLike, from_dict: Callable, what: str):
    """A report's JSON file read back with ``from_dict``.

    :param path: the JSON file.
    :param from_dict: the report class's ``from_dict``.
    :param str what: the kind of report, for messages (e.g. ``"a gap report"``).
    :returns: what ``from_dict`` returns.
    :raises ValueError: if the file is not valid JSON or not such a report with per-point values.
    :raises OSError: if it cannot be read.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"Expected {what}'s JSON in {str(path)!r}, but it is not valid JSON ({e})") from None
    try:
        return from_dict(data)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"Expected {what} with per-point values in {str(path)!r}: {e}") from None


def order_shards(parts: Sequence, held: Callable[[object], set[int]], what: str) -> list:
    """Shard reports in the order of their points, checked to tile one range: each records its range
    (``meta["points"]``), holds that many points (``held(part)``: the set of per-point lengths it holds), and starts
    where the one before ends.

    :param parts: shard reports (with ``meta``), in any order.
    :param held: the per-point lengths a report holds (one set element when they agree).
    :param str what: ``"report"`` or ``"evaluation"``, for messages.
    :returns: the reports sorted by their first point.
    :raises ValueError: for no reports, one that does not record its range or holds other than its range's points,
        or ranges that overlap or leave a hole (named).
    """
    if not parts:
        raise ValueError(f"Expected at least one shard {what} to merge, got none")
    missing = [i for i, p in enumerate(parts) if "points" not in p.meta]
    if missing:
        raise ValueError(f"Expected shard {what}s that record their points, but {what} {missing[0]} does not")
    for p in parts:  # the range a shard claims must be the points it holds (a file edited by hand)
        a, b = p.meta["points"]
        if held(p) != {b - a}:
            raise ValueError(f"Expected the shard of points {a}:{b} to hold {b - a} points, got {sorted(held(p))}")
    parts = sorted(parts, key=lambda p: p.meta["points"][0])
    for before, after in zip(parts, parts[1:]):
        (a0, b0), (a1, b1) = before.meta["points"], after.meta["points"]
        if a1 != b0:
            gap = "overlap" if a1 < b0 else "leave out the points between them"
            raise ValueError(f"Expected shards whose points follow each other, but {a0}:{b0} and {a1}:{b1} {gap}")
    return parts


def differing(a: dict, b: dict) -> list[str]:
    """The keys whose values differ between two dicts (missing counts as ``None``)."""
    return sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
