"""The evaluate job: the ELBO, the stronger estimators of log p(x), and log p̂(x), per data point.

:func:`evaluate` computes them for any model/guide pair that follows :mod:`ppl_vae.conventions`;
:func:`evaluate_run` is ``ppl-vae evaluate``: a trained run's pair on the first points of one of its splits.

Example::

    >>> import torch
    >>> from ppl_vae.models import LinearGaussian
    >>> model = LinearGaussian(x_dim=5, z_dim=2)
    >>> x = model.marginal().sample((4,))
    >>> result = evaluate(model, model.exact_posterior_guide, x, num_samples=10, iwae_samples=100)
    >>> list(result.estimates)
    ['elbo', 'iwae_100', 'log_p_hat']
    >>> bool(torch.allclose(result["log_p_hat"].per_point, model.log_marginal(x)))  # exact posterior: no gap
    True

References:

- Burda, Grosse & Salakhutdinov (2016). Importance weighted autoencoders. ICLR.
- Cremer, Li & Duvenaud (2018). Inference suboptimality in variational autoencoders. ICML.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from ppl_vae.data.splits import check_images
from ppl_vae.estimators import BDMC, Estimate, ais, bdmc, elbo, iwae_bound, prior_mc, select_by_pilot
from ppl_vae.runs import Run

from .inputs import as_run, differing, order_shards, point_range, read_report, select_points, split_data
from .outputs import write_json

__all__ = ["Evaluation", "evaluate", "evaluate_run", "log_p_hat", "load_evaluation", "merge_evaluations",
           "STRONG_ESTIMATORS"]

logger = logging.getLogger(__name__)

STRONG_ESTIMATORS = ("iwae", "ais")
"""Name prefixes of the estimators that enter log p̂(x)."""


def log_p_hat(estimates: Iterable[Estimate], pilots: Iterable[Estimate] = ()) -> Estimate | None:
    """log p̂(x) from the strong estimates (IWAE bounds and AIS, by name prefix :data:`STRONG_ESTIMATORS`), each a
    stochastic lower bound of log p(x): the one whose *pilot* — the same estimator rerun with its own random numbers
    and a fraction of the budget — has the highest mean over the points (:func:`~ppl_vae.estimators.select_by_pilot`).
    Never a per-point maximum over the estimates, which would keep the luckiest draw of each point and land above
    log p(x) (as Cremer et al. 2018's assembly can).

    :param estimates: :class:`~ppl_vae.estimators.Estimate` s of the same ``N`` points; others (ELBO, prior MC)
        are ignored.
    :param pilots: pilot estimates, one per strong estimate and with the same name; needed when there are several.
    :returns: an ``Estimate`` named ``"log_p_hat"`` with ``per_point (N,)``, ``info["from"]`` the chosen estimate and
        ``info["candidates"]`` all of them; or ``None`` if there is no strong estimate.
    :raises ValueError: if the strong estimates cover different numbers of points, or several come without pilots.
    """
    strong = [e for e in estimates if e.name.startswith(STRONG_ESTIMATORS)]
    if not strong:
        return None
    sizes = [(e.name, e.per_point.shape[0]) for e in strong]
    if len({n for _, n in sizes}) > 1:
        raise ValueError(f"Expected estimates of the same data points, got (name, size) {sizes}")
    names = [e.name for e in strong]
    if len(strong) == 1:
        return Estimate("log_p_hat", strong[0].per_point, {"from": names[0], "candidates": names})
    pilot = {e.name: e.per_point for e in pilots}
    missing = [n for n in names if n not in pilot]
    if missing:
        raise ValueError(f"Expected a pilot estimate for each of {names} to choose log p̂'s estimator, missing {missing}")
    values, chosen = select_by_pilot({e.name: e.per_point for e in strong}, {n: pilot[n] for n in names})
    return Estimate("log_p_hat", values, {"from": chosen, "candidates": names})


@dataclass
class Evaluation:
    """The estimates of one evaluation, in the order computed, and where they came from.

    :ivar dict estimates: name -> :class:`~ppl_vae.estimators.Estimate` (``per_point (N,)`` nats).
    :ivar int seed: the seed the estimators ran with.
    :ivar dict meta: what was evaluated (e.g. ``{"run": ..., "split": ...}``), written first in :meth:`to_dict`.
    :ivar str note: a caveat to show with the numbers (e.g. that an objective is not a bound on log p(x)).
    :ivar bdmc: the bidirectional Monte Carlo sandwich (:class:`~ppl_vae.estimators.bdmc.BDMC`) of AIS at the
        evaluation's settings, on as many points *simulated from the model* (not the evaluated data), or ``None``.
    :ivar dict pilots: ``{estimate: (N,)}`` the pilot estimates log p̂'s estimator was chosen on (when there were
        several candidates), kept so that evaluations of shards merge into one (:meth:`concat`).
    """

    estimates: dict[str, Estimate]
    seed: int = 0
    meta: dict = field(default_factory=dict)
    note: str | None = None
    bdmc: BDMC | None = None
    pilots: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Estimate:
        return self.estimates[name]

    @property
    def num_points(self) -> int:
        """``N``, the number of data points evaluated."""
        return next(iter(self.estimates.values())).per_point.shape[0]

    def to_dict(self, per_point: bool = True) -> dict:
        """The report ``ppl-vae evaluate`` writes: ``meta``, ``num_points``, ``seed``, ``estimates`` (each with
        ``mean``, ``stderr`` and, if ``per_point``, the values per point), ``note`` when there is one, and ``bdmc``
        (both bounds on simulated points, and their gap) when it ran.

        :param bool per_point: include every point's value.
        :returns: a JSON-serializable dict.
        """
        out = {**self.meta, "num_points": self.num_points, "seed": self.seed,
               "estimates": {name: e.to_dict(per_point) for name, e in self.estimates.items()}}
        if self.note:
            out["note"] = self.note
        if self.bdmc is not None:
            out["bdmc"] = self.bdmc.to_dict(per_point)
        if per_point and self.pilots:
            out["pilots"] = {name: v.detach().cpu().tolist() for name, v in self.pilots.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Evaluation:
        """The evaluation :meth:`to_dict` wrote with its per-point values (a saved ``evaluation_<split>.json``,
        loaded), exactly.

        :param dict data: :meth:`to_dict`'s output.
        :returns: the evaluation.
        :raises ValueError: if ``data`` is not an evaluation with per-point values.
        """
        if not isinstance(data, dict) or not isinstance(data.get("estimates"), dict):
            raise ValueError(f"Expected an evaluation (a dict with 'estimates'), got {type(data).__name__}"
                             f"{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''}")
        estimates = {name: Estimate.from_dict(e) for name, e in data["estimates"].items()}
        dtype = next(iter(estimates.values())).per_point.dtype
        meta = {k: v for k, v in data.items() if k not in ("num_points", "seed", "estimates", "note", "pilots", "bdmc")}
        pilots = {k: torch.tensor(v, dtype=dtype) for k, v in data.get("pilots", {}).items()}
        return cls(estimates, data["seed"], meta, data.get("note"), pilots=pilots,
                   bdmc=BDMC.from_dict(data["bdmc"]) if "bdmc" in data else None)

    @classmethod
    def concat(cls, parts: Sequence[Evaluation]) -> Evaluation:
        """One evaluation of the points of several (in the given order): every estimate's per-point values
        concatenated and log p̂ chosen again on the pilots of all the points — exactly :func:`evaluate` on all the
        points at once, since each point's estimates come from its own random streams.

        :param parts: evaluations of disjoint sets of points with the same estimators and seed.
        :returns: the evaluation of all their points.
        :raises ValueError: for no parts, or parts with other estimators or seeds.
        """
        if not parts:
            raise ValueError("Expected at least one evaluation to concatenate, got none")
        if any(p.bdmc is not None for p in parts):
            raise ValueError("Evaluations with BDMC cannot be merged: BDMC runs on points it simulates from the model, "
                             "not on the evaluated points; run the evaluation with --bdmc on one process, unsharded")
        first = parts[0]
        for p in parts[1:]:
            if list(p.estimates) != list(first.estimates) or p.seed != first.seed or set(p.pilots) != set(first.pilots):
                raise ValueError(f"Expected evaluations with the same estimators and seed, got {list(first.estimates)} "
                                 f"(seed {first.seed}) and {list(p.estimates)} (seed {p.seed})")
        names = [name for name in first.estimates if name != "log_p_hat"]
        estimates = {name: Estimate.concat([p.estimates[name] for p in parts]) for name in names}
        pilots = {name: torch.cat([p.pilots[name] for p in parts]) for name in first.pilots}
        best = log_p_hat(estimates.values(), [Estimate(name, v) for name, v in pilots.items()])
        if best is not None:
            estimates["log_p_hat"] = best
        return cls(estimates, first.seed, dict(first.meta), first.note, pilots=pilots)

    def table(self) -> str:
        """A plain-text table: estimator, mean nats per point, standard error.

        :returns: the table, one line per estimator under a header line.
        """
        where = f" {self.meta['split']}" if "split" in self.meta else ""
        lines = [f"{'estimator':<20} {'nats/point':>12} {'± s.e.':>8}   ({self.num_points}{where} points)"]
        lines += [f"{e.name:<20} {e.mean:>12.3f} {e.stderr:>8.3f}" for e in self.estimates.values()]
        if self.bdmc is not None:
            b = self.bdmc
            gap = Estimate("gap", b.gap)
            lines += [f"BDMC on {b.lower.per_point.numel()} points simulated from the model (not the data above), "
                      f"{b.info['num_steps']} AIS steps x {b.info['num_chains']} chains:",
                      f"{'lower (forward AIS)':<20} {b.lower.mean:>12.3f} {b.lower.stderr:>8.3f}",
                      f"{'upper (reverse AIS)':<20} {b.upper.mean:>12.3f} {b.upper.stderr:>8.3f}",
                      f"{'upper - lower':<20} {gap.mean:>12.3f} {gap.stderr:>8.3f}"]
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically (a reader sees the old file or the new one, never half).

        :param path: the JSON file.
        :returns: ``path``.
        :raises OSError: if the file cannot be written (it is then left as it was).
        """
        return write_json(Path(path), self.to_dict())


def _at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"Expected {name} to be an integer >= {low}, got {value!r}")


def evaluate(
    model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, *, num_samples: int = 1, iwae_samples: int = 0,
    ais_steps: int = 0, ais_chains: int = 16, ais_leapfrog: int = 10, ais_from_guide: bool = False,
    prior_mc_samples: int = 0, bdmc_steps: int = 0, seed: int = 0, progress: bool = False,
) -> Evaluation:
    """Estimate log p(x) per data point with the ELBO and, when asked, the IWAE bound, AIS and prior Monte-Carlo;
    then log p̂(x) (:func:`log_p_hat`) when a strong estimator ran: with both IWAE and AIS, the one that wins
    independent pilot runs (a tenth of the samples or chains, after the reported ones).

    :param model: the Pyro model ``model(x, idx)``.
    :param guide: its guide (used by the ELBO, IWAE and AIS from the guide).
    :param x: ``(N, D)`` data points; for models with an ``x_dim``, ``D`` must equal it.
    :param idx: ``(N,)`` the points' indices in their split (for per-datapoint guides), or ``None``.
    :param int num_samples: Monte-Carlo samples per point for the ELBO.
    :param int iwae_samples: ``K`` of the IWAE bound (0: not computed).
    :param int ais_steps: annealing distributions of AIS (0: not computed).
    :param int ais_chains: AIS chains per point.
    :param int ais_leapfrog: leapfrog steps per HMC transition of AIS.
    :param bool ais_from_guide: start AIS from the guide instead of the prior.
    :param int prior_mc_samples: samples of the naive prior Monte-Carlo estimate (0: not computed).
    :param int bdmc_steps: also bidirectional Monte Carlo (:func:`~ppl_vae.estimators.bdmc.bdmc`) with this many
        annealing steps, ``ais_chains`` chains, ``ais_leapfrog`` leapfrog steps and the start of AIS
        (``ais_from_guide``), on ``N`` points simulated from the model in the shape and with the indices of ``x``:
        how far AIS at these settings is from log p(x) (0: not computed).
    :param int seed: seed of every estimator: each point's random numbers come from its own streams, seeded from
        ``(seed, idx[n], purpose)`` (:mod:`ppl_vae.streams`), so a point's estimates are the same in any batch,
        shard or process.
    :param bool progress: show progress bars.
    :returns: the :class:`Evaluation`, estimates in the order ``elbo``, ``iwae_K``, ``ais_T``, ``prior_mc_S``,
        ``log_p_hat``; BDMC's bounds in :attr:`Evaluation.bdmc`.
    :raises ValueError: for a count out of range or data of the wrong shape.
    :raises DataError: for data the model cannot score (NaN, pixels outside [0, 1] under a Bernoulli likelihood).
    """
    _at_least("num_samples", num_samples, 1)
    for name, value in (("iwae_samples", iwae_samples), ("ais_steps", ais_steps), ("prior_mc_samples", prior_mc_samples),
                        ("bdmc_steps", bdmc_steps), ("seed", seed)):
        _at_least(name, value, 0)
    _at_least("ais_chains", ais_chains, 1)
    _at_least("ais_leapfrog", ais_leapfrog, 1)
    if ais_from_guide and not (ais_steps or bdmc_steps):
        raise ValueError("Expected ais_steps >= 1 or bdmc_steps >= 1 with ais_from_guide=True, got 0 (AIS is off)")
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"Expected x of shape (N, D) with N >= 1, got {tuple(x.shape) if isinstance(x, torch.Tensor) else x!r}")
    x_dim = getattr(model, "x_dim", None)
    if isinstance(x_dim, int):
        check_images(x, x_dim, likelihood=None, name="x")
    pyro.set_rng_seed(seed)  # for anything outside the per-point streams (checks that draw)
    results = [elbo(model, guide, x, idx, num_samples=num_samples, seed=seed)]
    if iwae_samples:
        results.append(iwae_bound(model, guide, x, idx, num_samples=iwae_samples, progress=progress, seed=seed))
    if ais_steps:
        results.append(ais(model, x, idx, guide=guide if ais_from_guide else None, num_chains=ais_chains,
                           num_steps=ais_steps, leapfrog_steps=ais_leapfrog, progress=progress, seed=seed))
    if prior_mc_samples:
        results.append(prior_mc(model, x, idx, num_samples=prior_mc_samples, seed=seed))
    pilots = []
    if iwae_samples and ais_steps:  # two candidates for log p̂: choose on independent pilots (a tenth of the budget)
        iw, a = results[1], results[2]
        pilot_iw = iwae_bound(model, guide, x, idx, num_samples=max(1, iwae_samples // 10), seed=seed,
                              purpose="pilot_iwae")
        pilot_a = ais(model, x, idx, guide=guide if ais_from_guide else None, num_chains=max(1, ais_chains // 10),
                      num_steps=ais_steps, leapfrog_steps=ais_leapfrog, seed=seed, purpose="pilot_ais")
        pilots = [Estimate(iw.name, pilot_iw.per_point), Estimate(a.name, pilot_a.per_point)]
    best = log_p_hat(results, pilots)
    if best is not None:
        results.append(best)
    sandwich = None
    if bdmc_steps:
        sandwich = bdmc(model, x, idx, guide=guide if ais_from_guide else None, num_chains=ais_chains,
                        num_steps=bdmc_steps, leapfrog_steps=ais_leapfrog, progress=progress)
    return Evaluation({r.name: r for r in results}, seed, bdmc=sandwich, pilots={p.name: p.per_point for p in pilots})


def evaluate_run(
    run: Run | str | os.PathLike, split: str = "test", n: int | None = None, *, num_samples: int = 1,
    iwae_samples: int = 0, ais_steps: int = 0, ais_chains: int = 16, ais_leapfrog: int = 10,
    ais_from_guide: bool = False, prior_mc_samples: int = 0, bdmc_steps: int = 0, seed: int = 0,
    device: str = "cpu", progress: bool = False, points: tuple[int, int] | None = None,
    shard: tuple[int, int] | None = None,
) -> Evaluation:
    """``ppl-vae evaluate``: :func:`evaluate` on the first ``n`` points of a run's ``split`` (or the points
    ``points``, or a shard of those).

    Save the result with :meth:`Evaluation.save` (the command writes ``RUN/evaluation_<split>.json``, a shard
    ``RUN/evaluation_<split>_points_<a>-<b>.json``); the evaluations of shards merge into exactly the evaluation
    of all their points (:func:`merge_evaluations`).

    :param run: a :class:`~ppl_vae.runs.Run` or its directory (loaded onto ``device``).
    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :param n: the first ``n`` points (``None``: all).
    :param points: ``(a, b)``: the points ``a`` to ``b - 1`` instead of the first ``n``.
    :param shard: ``(i, K)``: only shard ``i`` (0-based) of ``K`` contiguous shards of those points.
    :param str device: where to load a run given as a directory.
    :returns: the :class:`Evaluation`; ``meta`` holds the run directory and the split; ``note`` says when the
        run's model is not a VAE (its "ELBO" is then its Pyro objective, not a bound on log p(x)).
    :raises ValueError: for a per-datapoint guide on a split other than ``"train"``, an empty split, ``n`` out
        of range, or a count out of range (see :func:`evaluate`).
    :raises DataError: if the split's images do not fit the run's model.
    :raises CheckpointError: for a missing, truncated or foreign checkpoint.

    The other parameters are :func:`evaluate`'s.
    """
    run = as_run(run, device)
    if not run.amortized and split != "train":
        raise ValueError(f"The run's guide {run.config.guide!r} is per-datapoint (trained on the training points "
                         "only): evaluate split 'train', or measure test bounds with the gap job, which fits q* "
                         "for each test point")
    if bdmc_steps and (points is not None or shard is not None):
        raise ValueError("Expected no points= or shard= with bdmc_steps: BDMC runs on points it simulates from the "
                         "model, which shards cannot merge; run it on one process, unsharded")
    data = split_data(run, split)
    a, b = point_range(len(data), n, points, shard, split)
    x, idx = select_points(data, a, b)
    result = evaluate(run.model, run.guide, x, idx, num_samples=num_samples, iwae_samples=iwae_samples,
                      ais_steps=ais_steps, ais_chains=ais_chains, ais_leapfrog=ais_leapfrog,
                      ais_from_guide=ais_from_guide, prior_mc_samples=prior_mc_samples, bdmc_steps=bdmc_steps, seed=seed,
                      progress=progress)
    result.meta = {"run": str(run.path), "split": split, "points": [a, b]}
    if run.config.model != "vae":
        result.note = (f"model {run.config.model!r}: the 'elbo' is its Pyro objective (reconstruction or feature "
                       "likelihood), not a bound on log p(x)")
        logger.warning(result.note)
    return result


def load_evaluation(path: str | os.PathLike) -> Evaluation:
    """Read back an evaluation :meth:`Evaluation.save` wrote, with every per-point value.

    :param path: the JSON file.
    :returns: the evaluation.
    :raises ValueError: if the file is not an evaluation with per-point values.
    :raises OSError: if it cannot be read.
    """
    return read_report(path, Evaluation.from_dict, "an evaluation")


def merge_evaluations(parts: Sequence[Evaluation]) -> Evaluation:
    """The evaluation of one run's split made of the evaluations of its shards (``evaluate_run(..., shard=(i, K))``
    or ``points=(a, b)``): exactly what :func:`evaluate_run` returns on all their points at once.

    :param parts: evaluations of the same run, split, estimators and seed whose point ranges tile one range.
    :returns: the merged evaluation.
    :raises ValueError: for no parts, parts of different runs, splits or settings, or point ranges that overlap or
        leave a hole (named).
    """
    parts = order_shards(parts, lambda p: {e.per_point.numel() for e in p.estimates.values()}, "evaluation")
    same = {k: v for k, v in parts[0].meta.items() if k != "points"}
    for p in parts[1:]:
        other = {k: v for k, v in p.meta.items() if k != "points"}
        if other != same:
            raise ValueError(f"Expected shards of one evaluation (the same run and split), but {differing(same, other)} "
                             "differ")
    merged = Evaluation.concat(parts)
    merged.meta = {**same, "points": [parts[0].meta["points"][0], parts[-1].meta["points"][1]]}
    return merged
