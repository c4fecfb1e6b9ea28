"""The naive Monte-Carlo estimate of log p(x) with latents drawn from the prior.

.. math:: \\log \\hat p(x) = \\log \\frac1S \\sum_{s=1}^S p(x | z_s), \\qquad z_s \\sim p(z)

Unbiased for p(x) but, in high dimension, almost no prior sample lands where the posterior has its mass: the
estimate is dominated by its largest term and biased far below log p(x) for any practical S — the reason
importance sampling from a guide (IWAE) and annealing (AIS) exist.
"""
from __future__ import annotations

import math

import torch

from ppl_vae.conventions import default_idx, latent_sites, max_plate_nesting
from ppl_vae.data.errors import check_finite
from ppl_vae.streams import point_streams, sampling_from
from ppl_vae.traces import point_log_density, sample_sites, trace_particles

from .chunks import DEFAULT_MAX_ROWS, chunk_sizes, logaddexp, point_chunks, sample_chunks, samples_last
from .estimate import Estimate

__all__ = ["prior_mc"]


@torch.no_grad()
def prior_mc(model, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 1000,
             max_rows: int = DEFAULT_MAX_ROWS, seed: int | None = None, purpose: str = "prior_mc") -> Estimate:
    """:math:`\\log\\frac1S\\sum_s p(x_n|z_s)` per data point, ``z_s`` from the prior.

    :param x: ``(N, ...)``.
    :param idx: ``(N,)`` or ``None``.
    :param int num_samples: ``S``.
    :param seed: per-point random streams seeded from ``(seed, idx[n], purpose)`` (:mod:`ppl_vae.streams`), or
        ``None``: the global random generator.
    :param str purpose: names the streams.
    :returns: :class:`Estimate` with ``per_point (N,)``.
    :raises DataError: if ``x`` holds NaN or infinite values (while Pyro's validation is enabled).
    :raises ValueError: if ``num_samples < 1``.
    """
    if num_samples < 1:
        raise ValueError(f"Expected num_samples >= 1, got {num_samples}")
    check_finite(x)
    idx = default_idx(x, idx)
    latent_sites(model, x[:2], idx[:2])  # the conventions, checked once
    nesting = max_plate_nesting(model, None, x[:1], idx[:1])
    points, samples = chunk_sizes(num_samples, x.shape[0], max_rows)
    out = []
    for xc, ic in point_chunks(x, idx, points):
        lse, streams = None, point_streams(seed, ic, purpose, x.device)
        for k in sample_chunks(num_samples, samples):
            with sampling_from(streams):
                trace = trace_particles(model, xc, ic, k, nesting)  # every latent drawn from the prior
            observed = [name for name, site in sample_sites(trace) if site["is_observed"]]
            lse = logaddexp(lse, samples_last(point_log_density(trace, observed, nesting, k, xc.shape[0])).logsumexp(-1))
        out.append(lse - math.log(num_samples))
    return Estimate(f"prior_mc_{num_samples}", torch.cat(out), {"num_samples": num_samples})
