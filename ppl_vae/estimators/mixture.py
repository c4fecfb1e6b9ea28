"""The importance-weighted bound with a mixture of proposals (multiple importance sampling), per data point.

With proposals :math:`q_1, \\dots, q_J` — an amortized guide and the per-datapoint q* of several families, say —
``K`` samples are drawn from each and every sample is weighted against the equal-weight mixture (the balance
heuristic of Veach & Guibas 1995; the deterministic mixture of Owen & Zhou 2000):

.. math:: \\hat p(x) = \\frac{1}{JK} \\sum_{j=1}^J \\sum_{k=1}^K
          \\frac{p(x, z_{jk})}{\\frac1J \\sum_i q_i(z_{jk} | x)}, \\qquad z_{jk} \\sim q_j(\\cdot | x)

:math:`\\hat p(x)` is unbiased, so :math:`\\log \\hat p(x)` is a stochastic lower bound of :math:`\\log p(x)`, like
IWAE. It is as good as the best proposal where that one covers the posterior, and far more reliable where none
does alone: a broad proposal (an untrained or amortized guide) covers the tails a narrow q* misses — defensive
importance sampling (Hesterberg 1995) — so the weights stay bounded and Pareto k̂ low. Everything runs in the model's
unconstrained latent space (:class:`~ppl_vae.latent_space.LatentSpace`), where the Jacobian terms cancel.

References:

1. Veach, E., Guibas, L. J. (1995). Optimally combining sampling techniques for Monte Carlo rendering. SIGGRAPH.
2. Owen, A., Zhou, Y. (2000). Safe and effective importance sampling. JASA 95.
3. Hesterberg, T. (1995). Weighted average importance sampling and defensive mixture distributions. Technometrics.
"""
from __future__ import annotations

import math

import torch

from ppl_vae.conventions import default_idx, max_plate_nesting
from ppl_vae.latent_space import LatentSpace
from ppl_vae.streams import point_streams, sampling_from

from .chunks import DEFAULT_MAX_ROWS, chunk_sizes, logaddexp, point_chunks, sample_chunks, samples_last
from .estimate import Estimate
from .psis import TopLogWeights

__all__ = ["mixture_iwae", "scores_foreign_points"]


def scores_foreign_points(space: LatentSpace, guide, x: torch.Tensor, idx: torch.Tensor) -> bool:
    """Whether ``guide`` can evaluate its density at points it did not sample (planar and radial flows cannot)."""
    try:
        with torch.no_grad():
            nesting = max_plate_nesting(space.model, guide, x[:1], idx[:1])
            u, _ = space.sample_guide(guide, x[:1], idx[:1], 1, nesting)
            space.guide_log_density(guide, x[:1], idx[:1], u + 0.01, nesting)
    except ValueError:
        return False
    return True


@torch.no_grad()
def mixture_iwae(model, proposals: list, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 1000,
                 max_rows: int = DEFAULT_MAX_ROWS, seed: int | None = None, purpose: str = "iwae_mixture",
                 ) -> tuple[Estimate, torch.Tensor]:
    """:math:`\\log \\hat p(x_n)` with ``num_samples`` samples from each guide of ``proposals``, weighted against their
    equal-weight mixture, per data point.

    :param proposals: guides of ``model`` (amortized or per-datapoint, keyed by ``idx``) that can score points they
        did not sample (:func:`scores_foreign_points`).
    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` the points' own indices or ``None``.
    :param int num_samples: ``K``, samples per proposal and point.
    :param seed: per-point random streams seeded from ``(seed, idx[n], purpose)`` (:mod:`ppl_vae.streams`), or
        ``None``: the global random generator.
    :param str purpose: names the streams.
    :returns: ``(Estimate with per_point (N,), Pareto k̂ (N,) of the J*K weights)``.
    :raises ValueError: for an empty list, a pair that breaks the conventions, or discrete sites that are not
        enumerated.
    """
    if not proposals:
        raise ValueError("Expected at least one proposal for the mixture importance sampler, got none")
    if num_samples < 1:
        raise ValueError(f"Expected num_samples >= 1, got {num_samples}")
    idx = default_idx(x, idx)
    space = LatentSpace(model, x, idx)
    space.require_continuous("The mixture importance sampler")
    nestings = [max_plate_nesting(model, g, x[:1], idx[:1]) for g in proposals]
    j = len(proposals)
    points, samples = chunk_sizes(num_samples * j, x.shape[0], max_rows)
    samples = max(1, samples // j)
    out, khats = [], []
    for xc, ic in point_chunks(x, idx, points):
        lse, tail = None, TopLogWeights(num_samples * j, xc.shape[0])
        streams = point_streams(seed, ic, purpose, x.device)
        for k in sample_chunks(num_samples, samples):
            for g, nesting in zip(proposals, nestings):
                with sampling_from(streams):
                    u, _ = space.sample_guide(g, xc, ic, k, nesting)
                log_prior, log_lik = space.log_joint(xc, ic, u)
                log_q = torch.stack([space.guide_log_density(h, xc, ic, u, n) for h, n in zip(proposals, nestings)])
                lw = log_prior + log_lik - (samples_last(log_q).logsumexp(-1) - math.log(j))
                lse = logaddexp(lse, samples_last(lw).logsumexp(-1))
                tail.update(lw)
        out.append(lse - math.log(num_samples * j))
        khats.append(tail.khat())
    info = {"num_samples": num_samples, "proposals": j}
    return Estimate(f"iwae_mixture_{j}x{num_samples}", torch.cat(out), info), torch.cat(khats).to(x.device)
