"""The gap job (``ppl-vae gap``): the inference gap of a trained run on the first points of its splits, or at every
checkpoint kept over training, and the files of its report (JSON, Markdown, figures).

Example (a tiny budget, as in the tests)::

    >>> import tempfile
    >>> from ppl_vae.runs import TrainConfig, train_run
    >>> from ppl_vae.jobs import gap_run, save_gap_report
    >>> out = tempfile.mkdtemp()
    >>> run = train_run(TrainConfig(z_dim=2, hidden=(16,), epochs=1), f"{out}/run", progress=False)
    >>> report = gap_run(run, splits=("test",), n=5, families=("ffg",), eval_samples=50, max_steps=20)
    >>> list(report.columns)
    ['test (5 points)']
    >>> [p.name for p in save_gap_report(report, f"{out}/run/gap")]
    ['gap_test.json', 'gap_test.md', 'gap_test.png', 'semi_amortized_test.png']
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ppl_vae.figures.gap import plot_gap_bars, plot_gap_over_training, plot_semi_amortized
from ppl_vae.gap import GapOverTraining, GapReport, InferenceGap, inference_gap
from ppl_vae.runs import Run, kept_checkpoints, load_run

from .inputs import (
    SPLITS,
    as_run,
    differing,
    first_points,
    order_shards,
    point_range,
    range_suffix,
    read_report,
    require_vae,
    select_points,
    split_data,
)
from .outputs import json_bytes, staged_directory

__all__ = ["gap_run", "gap_over_training", "save_gap_report", "save_gap_over_training", "load_gap_report",
           "merge_gap_reports", "gap_report_name", "FAMILIES", "DEFAULT_POINTS"]

logger = logging.getLogger(__name__)

FAMILIES = ("ffg", "flow", "mvn")
DEFAULT_POINTS = 1000
"""The points ``ppl-vae gap`` measures when neither ``n`` nor ``points`` is given: the first 1,000 of each split."""


def _title(split: str, start: int, stop: int) -> str:
    """A column's title: ``test (1000 points)`` for the first points of the split, ``test (points 1000:2000)``
    for others."""
    return f"{split} ({stop} points)" if start == 0 else f"{split} (points {start}:{stop})"


def _check(run: Run, n: int, families: Sequence[str], eval_samples: int, init: str, max_steps: int, lr: float,
           local_samples: int, ais_steps: int, ais_chains: int) -> None:
    require_vae(run, "The inference gap")
    if not run.amortized:
        raise ValueError(f"The run's guide {run.config.guide!r} is not amortized: there is no L[q] to decompose")
    for name, value, low in (("n", DEFAULT_POINTS if n is None else n, 1), ("eval_samples", eval_samples, 2), ("max_steps", max_steps, 1),
                             ("local_samples", local_samples, 1), ("ais_steps", ais_steps, 0), ("ais_chains", ais_chains, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"Expected {name} to be an integer >= {low}, got {value!r}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"Expected families among {FAMILIES}, got {list(families)}")
    if init not in ("guide", "prior"):
        raise ValueError(f"Expected init 'guide' or 'prior', got {init!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < float("inf")):
        raise ValueError(f"Expected lr to be a finite number > 0, got {lr!r}")


def _measure(run: Run, x, idx, families, eval_samples, init, max_steps, lr, local_samples, ais_steps, ais_chains,
             seed, progress) -> InferenceGap:
    return inference_gap(run.model, run.guide, x, idx, families=tuple(families), eval_samples=eval_samples, init=init,
                         use_ais=ais_steps > 0, ais_kwargs={"num_steps": ais_steps, "num_chains": ais_chains},
                         local_kwargs={"max_steps": max_steps, "lr": lr, "num_samples": local_samples}, seed=seed,
                         progress=progress)


def gap_run(
    run: Run | str | os.PathLike, splits: Sequence[str] = ("test",), n: int | None = None, *,
    families: Sequence[str] = ("ffg", "flow"), eval_samples: int = 5000, init: str = "guide", max_steps: int = 3000,
    lr: float = 1e-2, local_samples: int = 8, ais_steps: int = 0, ais_chains: int = 16, seed: int = 0,
    device: str = "cpu", progress: bool = False, points: tuple[int, int] | None = None,
    shard: tuple[int, int] | None = None,
) -> GapReport:
    """``ppl-vae gap``: :func:`~ppl_vae.gap.inference_gap` of the run's model and encoder on the first ``n`` points
    of each split (or the points ``points``, or a shard of those), one column per split (Cremer, Li & Duvenaud 2018).

    Every point's results come from its own random streams (seeded from ``seed`` and the point's index), so the
    reports of shards merge (:func:`merge_gap_reports`) into exactly the report of one run on all their points.

    :param run: a :class:`~ppl_vae.runs.Run` or its directory (loaded onto ``device``).
    :param splits: the splits, one column each (``("train", "test")``: how well the encoder generalizes).
    :param n: the first ``n`` points of each split (default :data:`DEFAULT_POINTS` unless ``points`` is given).
    :param points: ``(a, b)``: the points ``a`` to ``b - 1`` of each split instead of the first ``n``.
    :param shard: ``(i, K)``: only shard ``i`` (0-based) of ``K`` contiguous shards of those points.
    :param families: per-datapoint families q* to fit (``"ffg"``, ``"flow"``, ``"mvn"``).
    :param int eval_samples: samples per point for every final bound.
    :param str init: start q* at the encoder (``"guide"``) or the prior (``"prior"``).
    :param int max_steps: cap on q* optimization steps.
    :param float lr: Adam learning rate of q*.
    :param int local_samples: samples per point per q* step.
    :param int ais_steps: include AIS with this many steps in log p̂(x) (0: no AIS).
    :param int ais_chains: AIS chains per point.
    :param int seed: seed of the measurement.
    :param str device: where to load a run given as a directory.
    :param bool progress: show progress bars.
    :returns: the :class:`~ppl_vae.gap.GapReport`; write its files with :func:`save_gap_report`.
    :raises ValueError: for a run that is not an amortized VAE, an unknown or repeated split or family, or a count
        out of range (``n`` beyond a split's size included).
    :raises DataError: if a split's images do not fit the run's model.
    :raises CheckpointError: for a missing, truncated or foreign checkpoint.
    """
    run = as_run(run, device)
    _check(run, n, families, eval_samples, init, max_steps, lr, local_samples, ais_steps, ais_chains)
    if not splits or len(set(splits)) != len(splits) or any(s not in SPLITS for s in splits):
        raise ValueError(f"Expected distinct splits among {SPLITS}, got {list(splits)}")
    n = DEFAULT_POINTS if n is None and points is None else n
    data = {split: split_data(run, split) for split in splits}  # all checked before work
    ranges = {split: point_range(len(d), n, points, shard, split) for split, d in data.items()}
    columns = {}
    for split, (a, b) in ranges.items():
        x, idx = select_points(data[split], a, b)
        logger.info("measuring the gap on %d %s points (%d:%d)", x.shape[0], split, a, b)
        columns[_title(split, a, b)] = _measure(run, x, idx, families, eval_samples, init, max_steps, lr,
                                                local_samples, ais_steps, ais_chains, seed, progress)
    sources = ", ".join(next(iter(columns.values())).info["log_p_hat_candidates"])
    description = (f"Inference gap of `{run.path}` (epoch {run.epoch}, guide {run.config.guide}, dataset "
                   f"{run.config.dataset}, binarization {run.config.binarize}); bounds with {eval_samples} samples "
                   f"per point, q* fitted from the {init} with Adam (lr {lr}, {local_samples} samples/step, at most "
                   f"{max_steps} steps); log p̂(x) comes, for each point, from one of {sources}, chosen on an "
                   "independent pilot run and evaluated afresh (a stochastic lower bound of log p(x)).")
    a, b = next(iter(ranges.values()))
    return GapReport(columns, description, {"run": str(run.path), "epoch": run.epoch, "points": [a, b]})


def gap_report_name(report: GapReport, shard: bool = False) -> str:
    """The stem of a report's files: ``gap_<splits>``, and for a shard ``gap_<splits>_points_<a>-<b>`` (named by its
    points, so that the shards of one study never overwrite each other).

    :param report: the report.
    :param bool shard: whether it is a shard's report.
    :returns: the stem.
    """
    splits = [c.split(" (")[0] for c in report.columns]
    stem = "gap_" + "_".join(splits)
    if shard:
        a, b = report.meta["points"]
        stem += range_suffix(a, b)
    return stem


def load_gap_report(path: str | os.PathLike) -> GapReport:
    """Read back a report :func:`save_gap_report` wrote (its JSON file), with every per-point value.

    :param path: the ``.json`` file.
    :returns: the report.
    :raises ValueError: if the file is not a gap report with per-point values.
    :raises OSError: if it cannot be read.
    """
    return read_report(path, GapReport.from_dict, "a gap report")


def merge_gap_reports(reports: Sequence[GapReport]) -> GapReport:
    """The report of one study made of the reports of its shards (``gap_run(..., shard=(i, K))`` or
    ``points=(a, b)``): every column's per-point values concatenated in the points' order and log p̂'s estimator
    chosen on the pilots of all the points — the report :func:`gap_run` writes on all of them at once.

    :param reports: shard reports of the same run, splits and settings whose point ranges tile one range (in any
        order).
    :returns: the merged report.
    :raises ValueError: for no reports, reports of different runs, splits or settings, or point ranges that overlap
        or leave a hole (named).
    """
    reports = order_shards(reports, lambda r: {len(g.log_p_hat) for g in r.columns.values()}, "report")
    first = reports[0]
    same = {k: v for k, v in first.meta.items() if k != "points"}
    for r in reports[1:]:
        other = {k: v for k, v in r.meta.items() if k != "points"}
        if other != same or r.description != first.description:
            differ = differing(same, other)
            what = f"{differ} differ" if differ else f"their settings differ:\n  {first.description}\n  {r.description}"
            raise ValueError(f"Expected shards of one study (the same run, epoch and settings), but {what}")
        if [c.split(" (")[0] for c in r.columns] != [c.split(" (")[0] for c in first.columns]:
            raise ValueError(f"Expected shards with the same splits, got {list(first.columns)} and {list(r.columns)}")
    start, stop = first.meta["points"][0], reports[-1].meta["points"][1]
    columns = {}
    for position, title in enumerate(first.columns):
        split = title.split(" (")[0]
        columns[_title(split, start, stop)] = InferenceGap.concat([list(r.columns.values())[position] for r in reports])
    return GapReport(columns, first.description, {**same, "points": [start, stop]})


def save_gap_report(report: GapReport, out_dir: str | os.PathLike, name: str | None = None,
                    shard: bool = False) -> list[Path]:
    """Write a report's files into ``out_dir``, all or none: ``<name>.json`` (per-point values; read back with
    :func:`load_gap_report`), ``<name>.md`` (description and table), ``<name>.png`` (the decomposition as bars) and,
    when the first column has a refinement curve, ``semi_amortized_<split>.png``; a shard's files are named by its
    points (``gap_test_points_0-250.json``, ``semi_amortized_test_points_0-250.png``).

    :param report: the report.
    :param out_dir: the directory (created if needed).
    :param name: the files' stem; default :func:`gap_report_name`.
    :param bool shard: name the files as a shard's.
    :returns: the paths written.
    :raises ValueError: if ``out_dir`` or a parent of it is a file.
    :raises OSError: if the files cannot be written (none is then).
    """
    splits = [c.split(" (")[0] for c in report.columns]
    name = name or gap_report_name(report, shard)
    suffix = range_suffix(*report.meta["points"]) if shard else ""
    first = next(iter(report.columns.values()))
    with staged_directory(out_dir) as stage:
        (stage / f"{name}.json").write_bytes(json_bytes(report.to_dict()))
        (stage / f"{name}.md").write_text(report.markdown(), encoding="utf-8")
        plot_gap_bars(report.columns, stage / f"{name}.png")
        if first.curve:
            plot_semi_amortized(first, stage / f"semi_amortized_{splits[0]}{suffix}.png")
        names = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file())
    return [Path(out_dir) / p for p in names]



def gap_over_training(
    run: Run | str | os.PathLike, split: str = "test", n: int = 1000, *, families: Sequence[str] = ("ffg", "flow"),
    eval_samples: int = 5000, init: str = "guide", max_steps: int = 3000, lr: float = 1e-2, local_samples: int = 8,
    ais_steps: int = 0, ais_chains: int = 16, seed: int = 0, device: str = "cpu", progress: bool = False,
) -> GapOverTraining:
    """``ppl-vae gap --over-training``: the gap of the same ``n`` points of ``split`` at every checkpoint the run
    kept (``ppl-vae train --keep-every E``).

    :param run: a :class:`~ppl_vae.runs.Run` or its directory; its kept checkpoints are loaded onto ``device``.
    :param str split: the split.
    :returns: the :class:`~ppl_vae.gap.GapOverTraining`; write its files with :func:`save_gap_over_training`.
    :raises ValueError: if the run kept no checkpoints, or as :func:`gap_run`.
    :raises CheckpointError: for a truncated or foreign checkpoint (before any measurement).

    The other parameters are :func:`gap_run`'s.
    """
    run = as_run(run, device)
    _check(run, n, families, eval_samples, init, max_steps, lr, local_samples, ais_steps, ais_chains)
    paths = kept_checkpoints(run.path)
    if not paths:
        raise ValueError(f"{run.path} kept no checkpoints: train with --keep-every E (keep_every=E)")
    x, idx = first_points(split_data(run, split), n, split)
    runs = [load_run(run.path, str(run.device), checkpoint=path) for path in paths]  # every file checked first
    epochs, gaps = [], []
    for r in runs:
        gaps.append(_measure(r, x, idx, families, eval_samples, init, max_steps, lr, local_samples, ais_steps,
                             ais_chains, seed, progress))
        epochs.append(r.epoch)
        logger.info("epoch %d: approximation gap %.2f, amortization gap %.2f", r.epoch,
                    gaps[-1].approximation_gap().mean().item(), gaps[-1].amortization_gap().mean().item())
    return GapOverTraining(epochs, gaps, {"run": str(run.path), "split": split, "num_points": x.shape[0]})


def save_gap_over_training(result: GapOverTraining, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``gap_over_training.json``, ``gap_over_training.md`` and ``gap_over_training.png`` into ``out_dir``,
    all or none.

    :param result: the gaps over training.
    :param out_dir: the directory (created if needed).
    :returns: the paths written.
    :raises ValueError: if ``out_dir`` or a parent of it is a file.
    :raises OSError: if the files cannot be written (none is then).
    """
    with staged_directory(out_dir) as stage:
        (stage / "gap_over_training.json").write_bytes(json_bytes(result.to_dict()))
        (stage / "gap_over_training.md").write_text(result.table() + "\n", encoding="utf-8")
        plot_gap_over_training(result.epochs, result.gaps, stage / "gap_over_training.png")
    return [Path(out_dir) / f"gap_over_training.{ext}" for ext in ("json", "md", "png")]

