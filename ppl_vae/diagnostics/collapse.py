"""Posterior-collapse diagnostics: the KL of every latent dimension and the active units.

A latent dimension has *collapsed* when the guide ignores the data there: :math:`q(z_d|x) \\approx p(z_d)` for
every :math:`x`, so its KL is near zero and the decoder gets no information through it.

- :func:`kl_per_dimension`: :math:`\\frac1N\\sum_n \\mathrm{KL}(q(z_d|x_n) \\| p(z_d))`, analytic, per dimension;
- :func:`active_units` (Burda et al. 2015, §5.2): dimension :math:`u` is active when
  :math:`A_u = \\mathrm{Cov}_x\\big(\\mathbb{E}_{q(u|x)}[u]\\big) > 0.01`;
- :func:`ppl_vae.figures.training.plot_collapse` draws the KL per dimension, sorted, and its history over epochs.

Latent dimensions are numbered by concatenating the latent sites, flattened, in the order the guide samples
them.

References:

1. Burda, Grosse, Salakhutdinov (2015), *Importance Weighted Autoencoders*, section 5.2.
2. Bowman et al. (2016), *Generating Sentences from a Continuous Space* (KL vanishing).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ppl_vae.conventions import max_plate_nesting
from ppl_vae.estimators.kl import latent_kl_terms
from ppl_vae.estimators.log_weights import traced_pair

__all__ = ["ActiveUnits", "kl_per_dimension", "active_units"]


@torch.no_grad()
def kl_per_dimension(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, *,
                     chunk_size: int = 1000) -> torch.Tensor:
    """Mean analytic KL of every latent dimension over the data points: ``(D,)`` nats.

    .. math:: \\mathrm{KL}_d = \\frac1N \\sum_{n=1}^N \\mathrm{KL}\\big(q(z_d | x_n) \\,\\|\\, p(z_d)\\big)

    Sums to the mean KL term of the ELBO (per data point). Needs a Normal guide and a Normal prior at every
    latent site (:func:`~ppl_vae.estimators.kl.site_kl_per_dimension`), possibly masked (``.mask(m)``, as in Pyro's
    deep Markov model: a masked-out element counts 0). Site scales are not applied: a subsampled data plate's
    ``N / B`` or a KL weight does not change a point's KL.

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` indices (default ``arange(N)``, for per-datapoint guides).
    :param int chunk_size: data points per traced pass.
    """
    idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    nesting = max_plate_nesting(model, guide, x[:1], idx[:1])
    total = None
    for a in range(0, x.shape[0], chunk_size):
        model_trace, guide_trace, _ = traced_pair(model, guide, x[a : a + chunk_size], idx[a : a + chunk_size], 1, nesting)
        # masks count, scales do not: a subsampled plate's N/B or a KL weight beta is not part of a point's KL
        parts = [(t.kl * t.mask).reshape(-1, t.kl.shape[-1]).sum(0) for t in latent_kl_terms(model_trace, guide_trace)]
        chunk = torch.cat(parts)
        total = chunk if total is None else total + chunk
    return total / x.shape[0]


class ActiveUnits(NamedTuple):
    """``count``: the number of active units; ``variances``: ``(D,)`` :math:`A_u` of every dimension."""

    count: int
    variances: torch.Tensor


@torch.no_grad()
def active_units(guide, x: torch.Tensor, idx: torch.Tensor | None = None, *, threshold: float = 0.01,
                 chunk_size: int = 1000) -> ActiveUnits:
    """Active units of Burda et al. (2015): the variance over the data of each latent's posterior mean,

    .. math:: A_u = \\mathrm{Cov}_x\\big(\\mathbb{E}_{q(u|x)}[u]\\big), \\qquad u \\text{ active} \\iff A_u > \\text{threshold}

    (the sample variance over the ``N`` points). Works for any guide whose site distributions have a closed-form
    ``mean`` (Normal, Delta, multivariate Normal).

    :param x: ``(N, ...)`` data, ``N >= 2``.
    :param idx: ``(N,)`` or ``None`` (``arange(N)``).
    :returns: :class:`ActiveUnits` ``(count, variances (D,))``.
    :raises ValueError: if a guide site has no closed-form mean.
    """
    if x.shape[0] < 2:
        raise ValueError(f"Expected at least 2 data points to compute a variance, got x of shape {tuple(x.shape)}")
    if threshold < 0:
        raise ValueError(f"Expected threshold >= 0, got {threshold}")
    idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    chunks = []
    for a in range(0, x.shape[0], chunk_size):
        xc, ic = x[a : a + chunk_size], idx[a : a + chunk_size]
        trace = prune_subsample_sites(poutine.trace(guide).get_trace(xc, ic))
        means = []
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            try:
                mean = site["fn"].mean
            except NotImplementedError:
                raise ValueError(
                    f"Expected the guide's distribution at site {name!r} to have a closed-form mean, but "
                    f"{type(site['fn']).__name__} has none (use ppl_vae.figures.samples.guide_means for a Monte Carlo mean)"
                ) from None
            means.append(mean.expand(site["value"].shape).reshape(xc.shape[0], -1))
        chunks.append(torch.cat(means, -1))
    variances = torch.cat(chunks).var(0)
    return ActiveUnits(int((variances > threshold).sum()), variances)


