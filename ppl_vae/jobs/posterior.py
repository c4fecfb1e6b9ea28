"""The posterior job (``ppl-vae posterior``): draws of a run's encoder, of per-point q* and of NUTS for chosen data
points as one ArviZ ``InferenceData``, their diagnostics table, and the files of the report (netCDF, Markdown,
JSON, figures).

Example (a tiny budget)::

    >>> import tempfile
    >>> from ppl_vae.runs import TrainConfig, train_run
    >>> from ppl_vae.jobs import posterior_run
    >>> out = tempfile.mkdtemp()
    >>> run = train_run(TrainConfig(z_dim=2, hidden=(16,), epochs=1), f"{out}/run", progress=False)
    >>> report = posterior_run(run, points=(0, 3), guides=("amortized", "ffg"), chains=2, draws=50, max_steps=20)
    >>> sorted(report.idata.posterior.data_vars)
    ['z_amortized', 'z_ffg']
    >>> [(row["datapoint"], row["sampler"]) for row in report.rows][:2]
    [(0, 'amortized'), (0, 'ffg')]
    >>> [p.name for p in report.save(f"{out}/run/posterior")][:3]
    ['diagnostics.json', 'diagnostics.md', 'forest.png']
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import torch

from ppl_vae import posterior as post
from ppl_vae.figures import posterior as figs
from ppl_vae.gap.local_fit import fit_local_guide
from ppl_vae.runs import Run

from .inputs import SPLITS, as_run, require_vae, split_data
from .outputs import json_bytes, staged_directory

__all__ = ["PosteriorReport", "posterior_run", "diagnostics_markdown", "SAMPLERS", "DIAGNOSTICS_COLUMNS"]

logger = logging.getLogger(__name__)

SAMPLERS = ("amortized", "ffg", "flow", "mvn", "nuts")
"""``amortized``: the run's encoder; ``ffg``/``flow``/``mvn``: q* fitted per point; ``nuts``: Pyro's NUTS."""

DIAGNOSTICS_COLUMNS = ("datapoint", "sampler", "elbo", "iwae", "khat", "log_p_hat", "gap", "r_hat_max", "ess_bulk_min")


def diagnostics_markdown(rows: list[dict]) -> str:
    """The rows of :func:`ppl_vae.posterior.diagnostics` as a Markdown table under a note saying what each column is.

    :param list rows: one dict per (data point, sampler).
    :returns: Markdown text ending with a newline.
    """
    lines = ["| " + " | ".join(DIAGNOSTICS_COLUMNS) + " |", "|" + " --- |" * len(DIAGNOSTICS_COLUMNS)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in DIAGNOSTICS_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Per data point and sampler: ELBO and IWAE from the draws, Pareto k̂ of the weights p(x,z)/q(z|x) "
            "(reliable below min(1 − 1/log10 S, 0.7) for S draws), log p̂(x) = the IWAE, on the second half of "
            "its draws, of the sampler with the highest mean IWAE on the first half (one choice for all points: a "
            "stochastic lower bound, never a per-point maximum), "
            "gap = log p̂(x) − ELBO (≈ KL(q || p(z|x))), worst R-hat and ESS of NUTS over the point's latent "
            "dimensions.")
    return note + "\n\n" + "\n".join(lines) + "\n"


@dataclass
class PosteriorReport:
    """What the posterior job produced.

    :ivar idata: the ``arviz.InferenceData`` (layout in :mod:`ppl_vae.posterior`).
    :ivar list rows: :func:`ppl_vae.posterior.diagnostics` of ``idata``.
    :ivar model: the run's generative model (for the 2-D figures).
    :ivar dict guides: sampler name -> every guide drawn from (not NUTS), each called with ``idx``.
    :ivar x: ``(P, D)`` the data points.
    :ivar idx: ``(P,)`` their indices in the split.
    :ivar dict draws: sampler name -> :class:`ppl_vae.posterior.Draws`, as drawn (on the run's device).
    """

    idata: az.InferenceData
    rows: list[dict]
    model: torch.nn.Module
    guides: dict = field(default_factory=dict)
    x: torch.Tensor | None = None
    idx: torch.Tensor | None = None
    draws: dict = field(default_factory=dict)

    def markdown(self) -> str:
        """The diagnostics table (:func:`diagnostics_markdown`).

        :returns: Markdown text.
        """
        return diagnostics_markdown(self.rows)

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write the report's files into ``out_dir``, all or none: ``posterior.nc`` (``az.from_netcdf`` reads it),
        ``diagnostics.md``, ``diagnostics.json``, ``forest.png``, ``pair.png``, with NUTS ``nuts_posterior.png``,
        and for a 2-D latent space ``posterior_grid.png`` and ``manifold.png``.

        :param out_dir: the directory (created if needed).
        :returns: the paths written, sorted.
        :raises ValueError: if ``out_dir`` or a parent of it is a file.
        :raises OSError: if the files cannot be written (none is then).
        """
        samplers = self.idata.attrs["samplers"].split(",")
        site = next(v for v in self.idata.posterior.data_vars).rsplit("_", 1)[0]
        size = self.idata.posterior.sizes[f"{site}_dim"]
        dims = tuple(range(min(4, size)))
        with staged_directory(out_dir) as stage:
            self.idata.to_netcdf(str(stage / "posterior.nc"))
            (stage / "diagnostics.md").write_text(self.markdown(), encoding="utf-8")
            (stage / "diagnostics.json").write_bytes(json_bytes(self.rows))
            figs.plot_samplers_forest(self.idata, stage / "forest.png", site, dims=dims)
            figs.plot_samplers_pair(self.idata, stage / "pair.png", site, dims=dims[:2])
            if "nuts" in samplers:
                figs.plot_nuts_posterior(self.idata, stage / "nuts_posterior.png", site, dims=dims)
            if getattr(self.model, "z_dim", None) == 2 and self.x is not None:
                extra = {}
                if "nuts" in self.draws:
                    nuts = self.draws["nuts"]["latents"][site]
                    extra["NUTS"] = nuts.reshape(-1, *nuts.shape[2:])[::4]
                figs.plot_posterior_grid(self.model, self.guides, self.x, stage / "posterior_grid.png", idx=self.idx,
                                         labels=self.idx, draws=extra)
                figs.plot_manifold(self.model, stage / "manifold.png", self.x)
            names = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file())
        return [Path(out_dir) / p for p in names]


def posterior_run(
    run: Run | str | os.PathLike, points: Sequence[int] = (0, 1, 2, 3), split: str = "test", *,
    guides: Sequence[str] = ("amortized", "ffg", "flow", "nuts"), chains: int = 4, draws: int = 500,
    warmup: int = 500, max_steps: int = 3000, seed: int = 0, device: str = "cpu", progress: bool = False,
) -> PosteriorReport:
    """``ppl-vae posterior``: ``chains x draws`` draws per point from each sampler in ``guides`` for the data points
    ``points`` of ``split``, as one ``InferenceData``, and their diagnostics.

    :param run: a :class:`~ppl_vae.runs.Run` of a VAE, or its directory (loaded onto ``device``).
    :param points: indices of the data points in the split (distinct).
    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    :param guides: samplers among :data:`SAMPLERS` (distinct).
    :param int chains: chains per sampler (guide draws are i.i.d.; NUTS chains run one after the other).
    :param int draws: draws per chain.
    :param int warmup: NUTS warm-up steps per chain.
    :param int max_steps: cap on the optimization steps of each q*.
    :param int seed: seed of the draws and of NUTS.
    :param str device: where to load a run given as a directory.
    :param bool progress: show progress bars.
    :returns: the :class:`PosteriorReport`; write its files with :meth:`PosteriorReport.save`.
    :raises ValueError: for a run that is not a VAE, points outside the split or repeated, an unknown or repeated
        sampler, ``"amortized"`` with a per-datapoint guide, or a count out of range.
    :raises DataError: if the split's images do not fit the run's model.
    :raises CheckpointError: for a missing, truncated or foreign checkpoint.
    """
    run = as_run(run, device)
    require_vae(run, "The posterior job")
    for name, value, low in (("chains", chains, 1), ("draws", draws, 1), ("warmup", warmup, 0),
                             ("max_steps", max_steps, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"Expected {name} to be an integer >= {low}, got {value!r}")
    if not guides or len(set(guides)) != len(guides) or any(g not in SAMPLERS for g in guides):
        raise ValueError(f"Expected distinct guides among {SAMPLERS}, got {list(guides)}")
    if "amortized" in guides and not run.amortized:
        raise ValueError(f"The run's guide {run.config.guide!r} is not amortized: drop 'amortized' from the guides")
    if split not in SPLITS:
        raise ValueError(f"Expected split in {SPLITS}, got {split!r}")
    data = split_data(run, split)
    points = list(points)
    bad = [p for p in points if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < len(data)]
    if bad or not points:
        raise ValueError(f"Expected points in [0, {len(data)}) (the {split} split), got {points}")
    if len(set(points)) != len(points):
        raise ValueError(f"Expected distinct points, got {points}")
    idx = torch.tensor(points, device=data.x.device)
    x = data.x[idx]
    torch.manual_seed(seed)
    samples, fitted = {}, {}
    for name in guides:
        logger.info("drawing from %s", name)
        if name == "nuts":
            samples["nuts"], _ = post.nuts_draws(run.model, x, idx, chains, draws, warmup, seed, progress=progress)
            continue
        if name == "amortized":
            guide = run.guide
        else:
            guide = fit_local_guide(run.model, x, idx, name, init_guide=run.guide if run.amortized else None,
                                    max_steps=max_steps, seed=seed).guide
        fitted[name] = guide
        samples[name] = post.guide_draws(run.model, guide, x, idx, chains, draws)
    idata = post.to_inference_data(samples, x, idx, attrs={"run": str(run.path), "split": split})
    return PosteriorReport(idata, post.diagnostics(idata), run.model, fitted, x, idx, samples)
