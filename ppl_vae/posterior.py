"""Posterior samples of any guide — and of a NUTS reference — as ArviZ ``InferenceData``, with diagnostics.

ArviZ converts only Pyro MCMC runs (``az.from_pyro`` takes an ``MCMC`` object); this module gives the same for
amortized, per-datapoint and flow guides, side by side with Pyro's NUTS on ``p(z | x)`` (the generative model frozen),
for chosen data points and any pair that follows the conventions: several sites, constrained supports (NUTS runs in
the unconstrained latent space, :class:`~ppl_vae.latent_space.LatentSpace`), matrix-shaped latents, models that use
``idx``, integer data.

Layout of the ``InferenceData`` (one per study):

- ``posterior``: one variable per (latent site, sampler), named ``{site}_{sampler}`` (``z_amortized``, ``z_ffg``,
  ``z_flow``, ``z_nuts``), dims ``(chain, draw, datapoint, ...)`` where ``...`` is one point's value shape (plates
  nested in the data plate, then the event): ``{site}_dim`` for a vector site, ``{site}_dim_0``, ``{site}_dim_1``...
  for more dimensions, nothing for a scalar site;
- ``sample_stats``: ``log_joint_{sampler}`` = log p(x, z) and ``log_q_{sampler}`` = log q(z | x) per draw, dims
  ``(chain, draw, datapoint)`` (``log_q`` is absent for NUTS);
- ``observed_data``: ``x`` with dims ``(datapoint, pixel)`` (or ``x_dim_0``, ... for data of other shapes);
- coordinates: ``datapoint`` = the points' indices in their split;
- ``attrs``: the samplers and their settings.
"""
from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from ppl_vae.conventions import DATA_PLATE, default_idx
from ppl_vae.data.errors import check_finite
from ppl_vae.estimators.log_weights import prepare_pair, traced_pair
from ppl_vae.estimators.psis import pareto_khat
from ppl_vae.estimators.selection import select_by_pilot
from ppl_vae.gap.local_fit import frozen
from ppl_vae.latent_space import LatentSpace
from ppl_vae.traces import is_auxiliary, point_log_density, sample_sites

__all__ = ["guide_draws", "nuts_draws", "to_inference_data", "diagnostics", "Draws"]


class Draws(dict):
    """``{"latents": {site: (C, S, N, *point shape)}, "log_joint": (C, S, N), "log_q": (C, S, N) or None}``."""


def _point_layout(site: dict, nesting: int) -> torch.Tensor:
    """A site's value ``(S, *batch, *event)`` traced under the particle plate, with the data dimension second:
    ``(S, N, *point shape)``."""
    value = site["value"]
    total = nesting + 1
    batch = value.dim() - len(site["fn"].event_shape)
    value = value.reshape((1,) * (total - batch) + tuple(value.shape))
    data = next(f for f in site["cond_indep_stack"] if f.name == DATA_PLATE)
    return value.movedim(total + data.dim, 1)


@torch.no_grad()
def guide_draws(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_chains: int = 4,
                num_draws: int = 500) -> Draws:
    """``num_chains x num_draws`` independent draws from ``q(z | x)`` for each point, with log p(x, z) and
    log q(z | x). (Guide draws are i.i.d.; the chain dimension only matches the NUTS layout.)

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` the points' own indices (per-datapoint guides look their rows up by them) or ``None``.
    :returns: :class:`Draws` with every latent site the guide samples.
    :raises ValueError: if the pair breaks the conventions (naming the site).
    """
    if num_chains < 1 or num_draws < 1:
        raise ValueError(f"Expected num_chains >= 1 and num_draws >= 1, got {num_chains}, {num_draws}")
    idx, nesting = prepare_pair(model, guide, x, idx)
    n, s = x.shape[0], num_chains * num_draws
    model_trace, guide_trace, _ = traced_pair(model, guide, x, idx, s, nesting)
    latents = {name: _point_layout(site, nesting) for name, site in sample_sites(guide_trace)
               if not site["is_observed"] and not is_auxiliary(site)}
    log_q = point_log_density(guide_trace, [nm for nm, _ in sample_sites(guide_trace)], nesting, s, n)
    log_joint = point_log_density(model_trace, [nm for nm, _ in sample_sites(model_trace)], nesting, s, n)
    shape = (num_chains, num_draws)
    return Draws(latents={k: v.reshape(*shape, *v.shape[1:]) for k, v in latents.items()},
                 log_joint=log_joint.reshape(*shape, n), log_q=log_q.reshape(*shape, n))


def nuts_draws(model, x: torch.Tensor, idx: torch.Tensor | None = None, num_chains: int = 4, num_draws: int = 500,
               warmup: int = 500, seed: int = 0, progress: bool = False, max_tree_depth: int = 10,
               ) -> tuple[Draws, list[MCMC]]:
    """Pyro's NUTS on ``p(z | x)`` for the points ``x`` (all in one run: the points' posteriors are independent),
    the model's parameters frozen, in the model's unconstrained latent space (discrete sites marked for enumeration
    summed out); the ``num_chains`` chains run one after the other in this process (seeds ``seed, seed + 1, ...``),
    each with its own warm-up, from a uniform draw in ``(-2, 2)`` per coordinate (as Pyro's default).

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` the points' own indices (handed to the model) or ``None``.
    :param int max_tree_depth: NUTS's maximum tree depth (at most ``2**depth`` leapfrog steps per draw).
    :returns: the :class:`Draws` (``log_q`` is ``None``) and the ``MCMC`` objects, one per chain.
    :raises ValueError: for discrete latent sites that are not enumerated (naming the site).
    :raises DataError: if ``x`` holds NaN or infinite values (while Pyro's validation is enabled).
    """
    if num_chains < 1 or num_draws < 1 or warmup < 0:
        raise ValueError(f"Expected num_chains >= 1, num_draws >= 1 and warmup >= 0, got {num_chains}, {num_draws}, "
                         f"{warmup}")
    check_finite(x)
    idx = default_idx(x, idx)
    space = LatentSpace(model, x, idx)
    space.require_continuous("NUTS")
    n = x.shape[0]

    def potential(params):
        with pyro.validation_enabled(False):  # an invalid leapfrog position has infinite energy: NUTS rejects it
            log_prior, log_lik = space.log_joint(x, idx, params["u"][None])
        return -(log_prior + log_lik).sum()

    runs, chains = [], []
    with frozen(model):
        dtype = next((p.dtype for p in getattr(model, "parameters", lambda: iter(()))()), torch.get_default_dtype())
        for c in range(num_chains):
            pyro.set_rng_seed(seed + c)
            init = (4 * torch.rand(n, space.dim, device=x.device) - 2).to(dtype)
            mcmc = MCMC(NUTS(potential_fn=potential, target_accept_prob=0.8, max_tree_depth=max_tree_depth), num_samples=num_draws,
                        warmup_steps=warmup, initial_params={"u": init}, disable_progbar=not progress)
            mcmc.run()
            chains.append(mcmc.get_samples()["u"].detach())
            runs.append(mcmc)
        u = torch.stack(chains).reshape(num_chains * num_draws, n, space.dim)
        with torch.no_grad():
            latents, log_det = space.constrain(u)
            log_prior, log_lik = space.log_joint(x, idx, u)
    values = space.point_values(latents)
    shape = (num_chains, num_draws)
    return Draws(latents={k: v.reshape(*shape, *v.shape[1:]) for k, v in values.items()},
                 log_joint=(log_prior - log_det + log_lik).reshape(*shape, n), log_q=None), runs


def _dims(name: str, shape) -> list[str]:
    if len(shape) == 0:
        return []
    if len(shape) == 1:
        return [f"{name}_dim"]
    return [f"{name}_dim_{i}" for i in range(len(shape))]


def to_inference_data(draws: dict[str, Draws], x: torch.Tensor, idx: torch.Tensor | None = None,
                      attrs: dict | None = None) -> az.InferenceData:
    """Assemble the :class:`Draws` of several samplers (``{"amortized": ..., "nuts": ...}``) into one
    ``InferenceData`` with the layout in the module docstring.

    :param x: ``(N, ...)`` the points' data.
    :param idx: ``(N,)`` their indices (the ``datapoint`` coordinate) or ``None``.
    :raises ValueError: if the samplers' draws do not share their ``(chains, draws, points)`` shape.
    """
    idx = default_idx(x, idx)
    shapes = {name: tuple(d["log_joint"].shape) for name, d in draws.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"Expected every sampler to have the same (chains, draws, points), got {shapes}: one "
                         "InferenceData shares its chain and draw dimensions")
    posterior, stats, dims = {}, {}, {}
    coords = {"datapoint": idx.cpu().numpy()}
    for sampler, d in draws.items():
        for site, v in d["latents"].items():
            name = f"{site}_{sampler}"
            point_shape = tuple(v.shape[3:])
            posterior[name] = v.detach().cpu().numpy()
            dims[name] = ["datapoint", *_dims(site, point_shape)]
            for dim, size in zip(dims[name][1:], point_shape):
                coords[dim] = np.arange(size)
        stats[f"log_joint_{sampler}"] = d["log_joint"].detach().cpu().numpy()
        dims[f"log_joint_{sampler}"] = ["datapoint"]
        if d["log_q"] is not None:
            stats[f"log_q_{sampler}"] = d["log_q"].detach().cpu().numpy()
            dims[f"log_q_{sampler}"] = ["datapoint"]
    x_dims = ["pixel"] if x.dim() == 2 else _dims("x", tuple(x.shape[1:]))
    dims["x"] = ["datapoint", *x_dims]
    for dim, size in zip(x_dims, x.shape[1:]):
        coords[dim] = np.arange(size)
    attrs = {"samplers": ",".join(draws), "library": "ppl_vae", **(attrs or {})}
    return az.from_dict(posterior=posterior, sample_stats=stats, observed_data={"x": x.detach().cpu().numpy()},
                        coords=coords, dims=dims, attrs=attrs)


def _worst_r_hat(draws, r_hat) -> float:
    """The largest R-hat over the coordinates that vary: a coordinate equal in every draw of every chain (the fixed
    entries of a Cholesky factor, a simplex's last coordinate given the others' sum) has no R-hat and is skipped; any
    other undefined R-hat (a chain that never moved) counts as infinite. ``-inf`` if no coordinate varies."""
    worst = -math.inf
    for name, values in r_hat.data_vars.items():
        x = draws[name].values  # (chain, draw, ...)
        constant = (x.max(axis=(0, 1)) == x.min(axis=(0, 1)))
        v = np.where(np.isnan(values.values), np.inf, values.values)
        v = v[~constant]
        if v.size:
            worst = max(worst, float(v.max()))
    return worst


def diagnostics(idata: az.InferenceData) -> list[dict]:
    """One row per (data point, sampler): ELBO = mean of log p(x,z) - log q(z), Pareto k̂ of those weights, the IWAE
    estimate from them; log p̂(x), the IWAE of the sampler chosen on the first half of every sampler's draws (highest
    mean over the points) and evaluated on the second half (:func:`~ppl_vae.estimators.select_by_pilot`: a stochastic
    lower bound, never a maximum over noisy values); the gap log p̂(x) - ELBO = KL(q || p(z|x)) estimate; and for NUTS the worst R-hat and
    bulk ESS over the point's latent dimensions (``az.rhat``, ``az.ess``).
    """
    samplers = idata.attrs["samplers"].split(",")
    points = idata.posterior.coords["datapoint"].values
    stats = idata.sample_stats
    per, halves = {}, {}
    for sampler in samplers:
        if f"log_q_{sampler}" not in stats:
            continue
        lw = torch.as_tensor(stats[f"log_joint_{sampler}"].values - stats[f"log_q_{sampler}"].values)
        lw = lw.reshape(-1, lw.shape[-1])  # (draws, N)
        per[sampler] = {"elbo": lw.mean(0), "khat": pareto_khat(lw), "iwae": lw.logsumexp(0) - math.log(lw.shape[0])}
        if lw.shape[0] >= 2:
            h = lw.shape[0] // 2
            halves[sampler] = (lw[:h].logsumexp(0) - math.log(h), lw[h:].logsumexp(0) - math.log(lw.shape[0] - h))
    log_p_hat = chosen = None
    if halves:
        log_p_hat, chosen = select_by_pilot({k: v[1] for k, v in halves.items()}, {k: v[0] for k, v in halves.items()})
    nuts_vars = [v for v in idata.posterior.data_vars if v.endswith("_nuts")]
    rows = []
    for i, point in enumerate(points):
        nuts = None
        if nuts_vars:
            sub = idata.posterior[nuts_vars].sel(datapoint=point)
            with np.errstate(divide="ignore", invalid="ignore"):  # a chain that never moved: R-hat is infinite
                r_hat, ess = az.rhat(sub), az.ess(sub)
            nuts = {"r_hat_max": _worst_r_hat(sub, r_hat),
                    "ess_bulk_min": float(min(np.nanmin(v.values) for v in ess.data_vars.values()))}
        for sampler in samplers:
            row = {"datapoint": int(point), "sampler": sampler}
            if sampler in per:
                p = per[sampler]
                row.update(elbo=p["elbo"][i].item(), khat=p["khat"][i].item(), iwae=p["iwae"][i].item())
                if log_p_hat is not None:
                    row.update(log_p_hat=log_p_hat[i].item(), log_p_hat_from=chosen,
                               gap=log_p_hat[i].item() - p["elbo"][i].item())
            if sampler == "nuts" and nuts is not None:
                row.update(nuts)
            rows.append(row)
    return rows
