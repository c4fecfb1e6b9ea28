"""The evidence lower bound per data point, by Monte Carlo (Kingma & Welling 2014)."""
from __future__ import annotations

import torch

from ppl_vae.streams import point_streams, sampling_from

from .chunks import DEFAULT_MAX_ROWS, chunk_sizes, point_chunks, sample_chunks, samples_last
from .estimate import Estimate
from .log_weights import log_weights, prepare_pair

__all__ = ["elbo"]


@torch.no_grad()
def elbo(
    model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 1,
    analytic_kl: bool = False, max_rows: int = DEFAULT_MAX_ROWS, seed: int | None = None, purpose: str = "elbo",
) -> Estimate:
    """Monte-Carlo ELBO :math:`\\frac1S \\sum_s \\log p(x_n, z_s) - \\log q(z_s | x_n)` per data point.

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` indices (for per-datapoint guides) or ``None``.
    :param int num_samples: ``S``.
    :param bool analytic_kl: use closed-form KL terms (mean-field guides; as
        :class:`pyro.infer.TraceMeanField_ELBO`).
    :param int max_rows: bound on ``samples x points`` per pass.
    :param seed: per-point random streams seeded from ``(seed, idx[n], purpose)`` (:mod:`ppl_vae.streams`), or
        ``None``: the global random generator.
    :param str purpose: names the streams.
    :returns: :class:`Estimate` with ``per_point`` of shape ``(N,)``.
    :raises ValueError: if ``num_samples < 1``.
    """
    if num_samples < 1:
        raise ValueError(f"Expected num_samples >= 1, got {num_samples}")
    idx, nesting = prepare_pair(model, guide, x, idx)
    points, samples = chunk_sizes(num_samples, x.shape[0], max_rows)
    out = []
    for xc, ic in point_chunks(x, idx, points):
        total, streams = 0.0, point_streams(seed, ic, purpose, x.device)
        for k in sample_chunks(num_samples, samples):
            with sampling_from(streams):
                total = total + samples_last(log_weights(model, guide, xc, ic, k, analytic_kl, nesting)).sum(-1)
        out.append(total / num_samples)
    name = "elbo_analytic_kl" if analytic_kl else "elbo"
    return Estimate(name, torch.cat(out), {"num_samples": num_samples})
