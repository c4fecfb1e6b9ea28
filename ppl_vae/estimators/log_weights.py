"""Per-data-point importance log-weights ``log p(x_n, z) - log q(z | x_n)`` for any model/guide pair.

Pyro's :func:`pyro.infer.importance.vectorized_importance_weights` sums the log weights over the whole
batch (one weight per particle); the per-data-point estimators (ELBO, IWAE) need them per data point, so this
module keeps the ``data`` plate's dimension: it runs guide and model under an outer particle plate, computes
every site's ``log_prob`` with Pyro's trace machinery, and sums each over all dimensions but the particle
and data dimensions.
"""
from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from ppl_vae.conventions import DATA_PLATE, max_plate_nesting

__all__ = ["log_weights", "traced_pair", "per_point", "vectorize_particles", "sample_prior", "sample_guide",
           "joint_terms", "guide_log_prob"]

PARTICLE_PLATE = "_num_particles_per_point"


def vectorize_particles(fn, num_samples: int, dim: int):
    def wrapped(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, num_samples, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def per_point(site: dict, log_prob: torch.Tensor, total_dims: int, num_samples: int, num_points: int) -> torch.Tensor:
    """Reduce a site's log-density (batch-shaped) to ``(num_samples, num_points)`` by summing all other dims."""
    data_dims = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_dims:
        raise ValueError(
            f"Site {site['name']!r} is not inside pyro.plate({DATA_PLATE!r}); per-data-point estimators need every "
            "sample site of the model and guide in the data plate"
        )
    if log_prob.dim() > total_dims:
        raise ValueError(
            f"Site {site['name']!r} has log_prob shape {tuple(log_prob.shape)} with more batch dimensions than "
            f"its plates declare ({total_dims - 1}); declare event dimensions with .to_event()"
        )
    lp = log_prob.reshape((1,) * (total_dims - log_prob.dim()) + tuple(log_prob.shape))
    keep = {0, total_dims + data_dims[0]}
    other = [d for d in range(total_dims) if d not in keep]
    if other:
        lp = lp.sum(other, keepdim=True)
    return lp.reshape(lp.shape[0], lp.shape[total_dims + data_dims[0]]).expand(num_samples, num_points)


def traced_pair(model, guide, x, idx=None, num_samples: int = 1, nesting: int | None = None):
    """Run ``guide`` then ``model`` (replayed on the guide's samples) under a particle plate of size
    ``num_samples``; returns ``(model_trace, guide_trace, total_dims)``. Latent values have shape
    ``(num_samples, N, *event_shape)``."""
    if nesting is None:
        nesting = max_plate_nesting(model, guide, x, idx)
    dim = -(nesting + 1)
    guide_trace = poutine.trace(vectorize_particles(guide, num_samples, dim)).get_trace(x, idx)
    model_trace = poutine.trace(poutine.replay(vectorize_particles(model, num_samples, dim), trace=guide_trace)).get_trace(x, idx)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace), nesting + 1


def _masked(site) -> torch.Tensor:
    """A site's log-density with its mask applied but *not* its scale: per-point estimators report true,
    unscaled bounds (a subsampled plate's N/B factor or a KL-annealing ``poutine.scale`` must not enter a
    log-sum-exp)."""
    return scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])


def _sample_sites(trace):
    return [(name, s) for name, s in trace.nodes.items() if s["type"] == "sample"]


def log_weights(
    model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 1,
    analytic_kl: bool = False, nesting: int | None = None,
) -> torch.Tensor:
    """``log p(x_n, z_s) - log q(z_s | x_n)`` for ``z_s ~ q(. | x_n)``: a ``(num_samples, N)`` tensor.

    Differentiable (reparameterized guides): wrap in ``torch.no_grad()`` to evaluate only.

    :param x: ``(N, ...)`` data. :param idx: ``(N,)`` data-point indices or ``None``.
    :param bool analytic_kl: replace ``log p(z) - log q(z)`` of each latent site by ``-KL(q || p)`` computed in
        closed form (as :class:`pyro.infer.TraceMeanField_ELBO`); the result's mean over samples is then the
        lower-variance ELBO estimate, not an importance weight.
    :param int nesting: the plate nesting of the pair (found by tracing if ``None``).
    """
    n = x.shape[0]
    model_trace, guide_trace, total = traced_pair(model, guide, x, idx, num_samples, nesting)
    guide_sites = dict(_sample_sites(guide_trace))
    out = x.new_zeros(num_samples, n)
    for name, site in _sample_sites(model_trace):
        if site["is_observed"] or not analytic_kl:
            out = out + per_point(site, _masked(site), total, num_samples, n)
        else:
            kl = kl_divergence(guide_sites[name]["fn"], site["fn"])
            out = out - per_point(site, kl, total, num_samples, n)
    if not analytic_kl:
        for site in guide_sites.values():
            out = out - per_point(site, _masked(site), total, num_samples, n)
    return out


def _latent_names(trace) -> list[str]:
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]


def sample_prior(model, x, idx=None, num_samples: int = 1, nesting: int = 1):
    """Draw latents from the model's prior: ``({site: (S, N, *event)}, log p(x | z) (S, N))``."""
    n = x.shape[0]
    trace = prune_subsample_sites(
        poutine.trace(vectorize_particles(model, num_samples, -(nesting + 1))).get_trace(x, idx)
    )
    latents = {name: trace.nodes[name]["value"] for name in _latent_names(trace)}
    log_lik = x.new_zeros(num_samples, n)
    for _, site in _sample_sites(trace):
        if site["is_observed"]:
            lp = _masked(site)
            log_lik = log_lik + per_point(site, lp, nesting + 1, num_samples, n)
    return latents, log_lik


def joint_terms(model, x, idx, latents: dict, nesting: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(z), log p(x | z))``, each ``(S, N)``, for given latents ``{site: (S, N, *event)}``;
    differentiable with respect to the latents (used by AIS's HMC moves)."""
    num_samples, n = next(iter(latents.values())).shape[:2]
    conditioned = poutine.condition(vectorize_particles(model, num_samples, -(nesting + 1)), data=latents)
    trace = prune_subsample_sites(poutine.trace(conditioned).get_trace(x, idx))
    log_prior, log_lik = x.new_zeros(num_samples, n), x.new_zeros(num_samples, n)
    for name, site in _sample_sites(trace):
        lp = per_point(site, _masked(site),
                       nesting + 1, num_samples, n)
        if name in latents:
            log_prior = log_prior + lp
        else:
            log_lik = log_lik + lp
    missing = set(latents) - set(trace.nodes)
    if missing:
        raise ValueError(f"Latent sites {sorted(missing)} were given but the model has no such sites")
    return log_prior, log_lik


def guide_log_prob(guide, x, idx, latents: dict, nesting: int = 1) -> torch.Tensor:
    """``log q(z | x)`` ``(S, N)`` of given latents ``{site: (S, N, *event)}`` under ``guide``."""
    num_samples, n = next(iter(latents.values())).shape[:2]
    conditioned = poutine.condition(vectorize_particles(guide, num_samples, -(nesting + 1)), data=latents)
    trace = prune_subsample_sites(poutine.trace(conditioned).get_trace(x, idx))
    out = x.new_zeros(num_samples, n)
    for _, site in _sample_sites(trace):
        out = out + per_point(site, _masked(site),
                              nesting + 1, num_samples, n)
    return out


def sample_guide(guide, x, idx=None, num_samples: int = 1, nesting: int = 1):
    """Draw latents from the guide: ``({site: (S, N, *event)}, log q(z | x) (S, N))``."""
    n = x.shape[0]
    trace = prune_subsample_sites(
        poutine.trace(vectorize_particles(guide, num_samples, -(nesting + 1))).get_trace(x, idx)
    )
    latents, log_q = {}, x.new_zeros(num_samples, n)
    for name, site in _sample_sites(trace):
        latents[name] = site["value"]
        log_q = log_q + per_point(site, _masked(site),
                                  nesting + 1, num_samples, n)
    return latents, log_q
