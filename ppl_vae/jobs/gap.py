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

from .inputs import SPLITS, as_run, first_points, require_vae, split_data
from .outputs import json_bytes, staged_directory

__all__ = ["gap_run", "gap_over_training", "save_gap_report", "save_gap_over_training", "FAMILIES"]

logger = logging.getLogger(__name__)

FAMILIES = ("ffg", "flow", "mvn")


def _check(run: Run, n: int, families: Sequence[str], eval_samples: int, init: str, max_steps: int, lr: float,
           local_samples: int, ais_steps: int, ais_chains: int) -> None:
    require_vae(run, "The inference gap")
    if not run.amortized:
        raise ValueError(f"The run's guide {run.config.guide!r} is not amortized: there is no L[q] to decompose")
    for name, value, low in (("n", n, 1), ("eval_samples", eval_samples, 2), ("max_steps", max_steps, 1),
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
    run: Run | str | os.PathLike, splits: Sequence[str] = ("test",), n: int = 1000, *,
    families: Sequence[str] = ("ffg", "flow"), eval_samples: int = 5000, init: str = "guide", max_steps: int = 3000,
    lr: float = 1e-2, local_samples: int = 8, ais_steps: int = 0, ais_chains: int = 16, seed: int = 0,
    device: str = "cpu", progress: bool = False,
) -> GapReport:
    """``ppl-vae gap``: :func:`~ppl_vae.gap.inference_gap` of the run's model and encoder on the first ``n`` points
    of each split, one column per split (Cremer, Li & Duvenaud 2018).

    :param run: a :class:`~ppl_vae.runs.Run` or its directory (loaded onto ``device``).
    :param splits: the splits, one column each (``("train", "test")``: how well the encoder generalizes).
    :param int n: the first ``n`` points of each split.
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
    points = {split: first_points(split_data(run, split), n, split) for split in splits}  # all checked before work
    columns = {}
    for split, (x, idx) in points.items():
        logger.info("measuring the gap on %d %s points", x.shape[0], split)
        columns[f"{split} ({x.shape[0]} points)"] = _measure(run, x, idx, families, eval_samples, init, max_steps, lr,
                                                             local_samples, ais_steps, ais_chains, seed, progress)
    sources = ", ".join(next(iter(columns.values())).info["log_p_hat_candidates"])
    description = (f"Inference gap of `{run.path}` (epoch {run.epoch}, guide {run.config.guide}, dataset "
                   f"{run.config.dataset}, binarization {run.config.binarize}); bounds with {eval_samples} samples "
                   f"per point, q* fitted from the {init} with Adam (lr {lr}, {local_samples} samples/step, at most "
                   f"{max_steps} steps); log p̂(x) comes, for each point, from one of {sources}, chosen on an "
                   "independent pilot run and evaluated afresh (a stochastic lower bound of log p(x)).")
    return GapReport(columns, description, {"run": str(run.path), "epoch": run.epoch})


def save_gap_report(report: GapReport, out_dir: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Write a report's files into ``out_dir``, all or none: ``<name>.json`` (per-point values), ``<name>.md``
    (description and table), ``<name>.png`` (the decomposition as bars) and, when the first column has a
    refinement curve, ``semi_amortized_<split>.png``.

    :param report: the report.
    :param out_dir: the directory (created if needed).
    :param name: the files' stem; default ``gap_<splits>`` from the column titles.
    :returns: the paths written.
    :raises ValueError: if ``out_dir`` or a parent of it is a file.
    :raises OSError: if the files cannot be written (none is then).
    """
    splits = [c.split(" (")[0] for c in report.columns]
    name = name or "gap_" + "_".join(splits)
    first = next(iter(report.columns.values()))
    with staged_directory(out_dir) as stage:
        (stage / f"{name}.json").write_bytes(json_bytes(report.to_dict()))
        (stage / f"{name}.md").write_text(report.markdown(), encoding="utf-8")
        plot_gap_bars(report.columns, stage / f"{name}.png")
        if first.curve:
            plot_semi_amortized(first, stage / f"semi_amortized_{splits[0]}.png")
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

