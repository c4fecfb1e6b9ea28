"""The importance-weighted bound (Burda, Grosse & Salakhutdinov 2015), per data point.

.. math:: \\mathcal{L}_K(x) = \\mathbb{E}\\Big[\\log \\frac1K \\sum_{k=1}^K \\frac{p(x, z_k)}{q(z_k|x)}\\Big],
          \\quad z_k \\sim q(\\cdot|x)

:math:`\\mathcal{L}_1` is the ELBO, :math:`\\mathcal{L}_K` increases with K and tends to :math:`\\log p(x)`.

.. warning:: Pyro's ``RenyiELBO(alpha=0)`` is *not* this bound for models with local latents: it
   log-sum-exps the weights of the whole batch at once (pyro issue 3104), giving
   :math:`\\log \\frac1K\\sum_k \\prod_n w_{kn}` instead of :math:`\\sum_n \\log\\frac1K\\sum_k w_{kn}`.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ppl_vae.streams import point_streams, sampling_from

from .chunks import DEFAULT_MAX_ROWS, chunk_sizes, logaddexp, point_chunks, sample_chunks, samples_last
from .estimate import Estimate
from .log_weights import log_weights, prepare_pair

__all__ = ["iwae_bound"]


@torch.no_grad()
def iwae_bound(
    model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 5000,
    max_rows: int = DEFAULT_MAX_ROWS, progress: bool = False, seed: int | None = None, purpose: str = "iwae",
) -> Estimate:
    """:math:`\\log\\frac1K\\sum_k w_{kn}` per data point with ``K = num_samples`` importance samples from the guide.

    Samples are processed in chunks (a running log-sum-exp), so memory is bounded by ``max_rows`` whatever K.

    :param x: ``(N, ...)``.
    :param idx: ``(N,)`` or ``None``.
    :param seed: draw each point's samples from its own stream, seeded from ``(seed, idx[n], purpose)``
        (:mod:`ppl_vae.streams`): a point's estimate is then the same whatever other points share the call;
        ``None`` draws from the global random generator.
    :param str purpose: names the streams (estimates with different purposes use independent numbers).
    :returns: :class:`Estimate`, ``per_point (N,)``.
    :raises ValueError: if ``num_samples < 1``.
    """
    if num_samples < 1:
        raise ValueError(f"Expected num_samples >= 1, got {num_samples}")
    idx, nesting = prepare_pair(model, guide, x, idx)
    points, samples = chunk_sizes(num_samples, x.shape[0], max_rows)
    out = []
    chunks = list(point_chunks(x, idx, points))
    if progress:
        chunks = tqdm(chunks, desc=f"IWAE-{num_samples}", unit="chunk")
    for xc, ic in chunks:
        lse, streams = None, point_streams(seed, ic, purpose, x.device)
        for k in sample_chunks(num_samples, samples):
            with sampling_from(streams):
                lw = log_weights(model, guide, xc, ic, k, nesting=nesting)
            lse = logaddexp(lse, samples_last(lw).logsumexp(-1))
        out.append(lse - math.log(num_samples))
    return Estimate(f"iwae_{num_samples}", torch.cat(out), {"num_samples": num_samples})


