"""Posterior samples of any guide — and of a NUTS reference — as ArviZ ``InferenceData``, with diagnostics.

ArviZ converts only Pyro MCMC runs (``az.from_pyro`` takes an ``MCMC`` object); this module gives the same for
amortized, per-datapoint and flow guides, side by side with Pyro's NUTS on ``p(z | x)`` (the generative model
frozen), for chosen data points.

Layout of the ``InferenceData`` (one per study):

- ``posterior``: one variable per (latent site, sampler), named ``{site}_{sampler}`` (``z_amortized``,
  ``z_ffg``, ``z_flow``, ``z_nuts``), dims ``(chain, draw, datapoint, {site}_dim)``;
- ``sample_stats``: ``log_joint_{sampler}`` = log p(x, z) and ``log_q_{sampler}`` = log q(z | x) per draw,
  dims ``(chain, draw, datapoint)`` (``log_q`` is absent for NUTS);
- ``observed_data``: ``x`` with dims ``(datapoint, pixel)``;
- coordinates: ``datapoint`` = the points' indices in their split, ``{site}_dim`` = ``0..D-1``;
- ``attrs``: the samplers and their settings.
"""
from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.poutine.util import prune_subsample_sites

from ppl_vae.conventions import latent_sites, max_plate_nesting
from ppl_vae.estimators.log_weights import joint_terms, per_point, vectorize_particles
from ppl_vae.estimators.psis import khat_threshold, pareto_khat
from ppl_vae.gap.local_fit import frozen

__all__ = ["guide_draws", "nuts_draws", "to_inference_data", "diagnostics", "Draws"]


class Draws(dict):
    """``{"latents": {site: (C, S, N, *event)}, "log_joint": (C, S, N), "log_q": (C, S, N) or None}``."""


@torch.no_grad()
def guide_draws(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_chains: int = 4,
                num_draws: int = 500) -> Draws:
    """``num_chains x num_draws`` independent draws from ``q(z | x)`` for each point, with log p(x, z) and
    log q(z | x). (Guide draws are i.i.d.; the chain dimension only matches the NUTS layout.)"""
    idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    n, s = x.shape[0], num_chains * num_draws
    nesting = max_plate_nesting(model, guide, x[:1], idx[:1])
    trace = prune_subsample_sites(poutine.trace(vectorize_particles(guide, s, -(nesting + 1))).get_trace(x, idx))
    latents, log_q = {}, x.new_zeros(s, n)
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            latents[name] = site["value"]
            log_q = log_q + per_point(site, site["fn"].log_prob(site["value"]), nesting + 1, s, n)
    log_prior, log_lik = joint_terms(model, x, idx, latents, nesting)
    shape = (num_chains, num_draws)
    return Draws(latents={k: v.reshape(*shape, *v.shape[1:]) for k, v in latents.items()},
                 log_joint=(log_prior + log_lik).reshape(*shape, n), log_q=log_q.reshape(*shape, n))


def nuts_draws(model, x: torch.Tensor, idx: torch.Tensor | None = None, num_chains: int = 4, num_draws: int = 500,
               warmup: int = 500, seed: int = 0, progress: bool = False) -> tuple[Draws, list[MCMC]]:
    """Pyro's NUTS on ``p(z | x)`` for the points ``x`` (all in one run: the points' posteriors are independent),
    the model's parameters frozen; the ``num_chains`` chains run one after the other in this process (seeds
    ``seed, seed + 1, ...``), each with its own warm-up, from a random initialization.

    :returns: the :class:`Draws` (``log_q`` is ``None``) and the ``MCMC`` objects, one per chain.
    """
    idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    names = list(latent_sites(model, x[:1]))
    runs, chains = [], {k: [] for k in names}
    with frozen(model):
        for c in range(num_chains):
            pyro.set_rng_seed(seed + c)
            mcmc = MCMC(NUTS(model, target_accept_prob=0.8), num_samples=num_draws, warmup_steps=warmup,
                        disable_progbar=not progress)
            mcmc.run(x, idx)
            samples = mcmc.get_samples()
            for k in names:
                chains[k].append(samples[k].to(x.dtype))
            runs.append(mcmc)
        latents = {k: torch.stack(v) for k, v in chains.items()}
        flat = {k: v.reshape(num_chains * num_draws, *v.shape[2:]) for k, v in latents.items()}
        nesting = max_plate_nesting(model, model, x[:1], idx[:1])
        with torch.no_grad():
            log_prior, log_lik = joint_terms(model, x, idx, flat, nesting)
    return Draws(latents=latents, log_joint=(log_prior + log_lik).reshape(num_chains, num_draws, -1), log_q=None), runs


def to_inference_data(draws: dict[str, Draws], x: torch.Tensor, idx: torch.Tensor, attrs: dict | None = None) -> az.InferenceData:
    """Assemble the :class:`Draws` of several samplers (``{"amortized": ..., "nuts": ...}``) into one
    ``InferenceData`` with the layout in the module docstring."""
    posterior, stats, dims = {}, {}, {}
    coords = {"datapoint": idx.cpu().numpy(), "pixel": np.arange(x.shape[1])}
    for sampler, d in draws.items():
        for site, v in d["latents"].items():
            v = v.reshape(*v.shape[:3], -1)
            name = f"{site}_{sampler}"
            posterior[name] = v.detach().cpu().numpy()
            dims[name] = ["datapoint", f"{site}_dim"]
            coords[f"{site}_dim"] = np.arange(v.shape[-1])
        stats[f"log_joint_{sampler}"] = d["log_joint"].detach().cpu().numpy()
        dims[f"log_joint_{sampler}"] = ["datapoint"]
        if d["log_q"] is not None:
            stats[f"log_q_{sampler}"] = d["log_q"].detach().cpu().numpy()
            dims[f"log_q_{sampler}"] = ["datapoint"]
    dims["x"] = ["datapoint", "pixel"]
    attrs = {"samplers": ",".join(draws), "library": "ppl_vae", **(attrs or {})}
    return az.from_dict(posterior=posterior, sample_stats=stats, observed_data={"x": x.detach().cpu().numpy()},
                        coords=coords, dims=dims, attrs=attrs)


def diagnostics(idata: az.InferenceData) -> list[dict]:
    """One row per (data point, sampler): ELBO = mean of log p(x,z) - log q(z), Pareto k̂ of those weights,
    the IWAE estimate from them, log p̂(x) (best IWAE among samplers with k̂ below
    :func:`~ppl_vae.estimators.psis.khat_threshold` of the number of draws), the gap
    log p̂(x) - ELBO = KL(q || p(z|x)) estimate, and for NUTS the worst R-hat and ESS over the point's latent
    dimensions (``az.summary``)."""
    samplers = idata.attrs["samplers"].split(",")
    points = idata.posterior.coords["datapoint"].values
    stats = idata.sample_stats
    per = {}
    for sampler in samplers:
        if f"log_q_{sampler}" not in stats:
            continue
        lw = torch.as_tensor(stats[f"log_joint_{sampler}"].values - stats[f"log_q_{sampler}"].values)
        lw = lw.reshape(-1, lw.shape[-1])  # (draws, N)
        per[sampler] = {"elbo": lw.mean(0), "khat": pareto_khat(lw),
                        "iwae": lw.logsumexp(0) - math.log(lw.shape[0]), "num_draws": lw.shape[0]}
    reliable = [torch.where(v["khat"] < khat_threshold(v["num_draws"]), v["iwae"], torch.full_like(v["iwae"], -math.inf))
                for v in per.values()]
    log_p_hat = torch.stack(reliable).max(0).values if reliable else None
    rows = []
    nuts_vars = [v for v in idata.posterior.data_vars if v.endswith("_nuts")]
    summary = az.summary(idata, var_names=nuts_vars, kind="diagnostics") if nuts_vars else None
    for i, point in enumerate(points):
        for sampler in samplers:
            row = {"datapoint": int(point), "sampler": sampler}
            if sampler in per:
                p = per[sampler]
                row.update(elbo=p["elbo"][i].item(), khat=p["khat"][i].item(), iwae=p["iwae"][i].item())
                if log_p_hat is not None and math.isfinite(log_p_hat[i].item()):
                    row.update(log_p_hat=log_p_hat[i].item(), gap=log_p_hat[i].item() - p["elbo"][i].item())
            if sampler == "nuts" and summary is not None:
                sel = summary[[f"[{point}," in name for name in summary.index]]
                row.update(r_hat_max=float(sel["r_hat"].max()), ess_bulk_min=float(sel["ess_bulk"].min()))
            rows.append(row)
    return rows
