"""The ELBO and the IWAE bound of a guide from the same importance samples, in one pass."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ppl_vae.streams import point_streams, sampling_from

from .chunks import DEFAULT_MAX_ROWS, chunk_sizes, logaddexp, point_chunks, sample_chunks, samples_last
from .estimate import Estimate
from .log_weights import log_weights, prepare_pair
from .psis import TopLogWeights

__all__ = ["elbo_and_iwae"]


@torch.no_grad()
def elbo_and_iwae(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 5000,
                  max_rows: int = DEFAULT_MAX_ROWS, progress: bool = False, desc: str = "bounds",
                  seed: int | None = None, purpose: str = "bounds") -> tuple[Estimate, Estimate, torch.Tensor]:
    """``(elbo, iwae_bound, khat)`` per data point from the same ``num_samples`` draws of the guide: the mean and
    the log-mean-exp of each point's log-weights (half the cost of computing them separately), and the Pareto k̂
    of those weights (:mod:`ppl_vae.estimators.psis`), which says whether the IWAE value can be trusted.

    :param x: ``(N, ...)``.
    :param seed: per-point random streams seeded from ``(seed, idx[n], purpose)`` (:mod:`ppl_vae.streams`), or
        ``None``: the global random generator.
    :param str purpose: names the streams.
    :returns: two :class:`Estimate` s with ``per_point (N,)`` and ``khat (N,)``.
    """
    idx, nesting = prepare_pair(model, guide, x, idx)
    points, samples = chunk_sizes(num_samples, x.shape[0], max_rows)
    chunks = list(point_chunks(x, idx, points))
    if progress:
        chunks = tqdm(chunks, desc=desc, unit="chunk")
    elbos, iwaes, khats = [], [], []
    for xc, ic in chunks:
        total, lse = 0.0, None
        tail = TopLogWeights(num_samples, xc.shape[0])
        streams = point_streams(seed, ic, purpose, x.device)
        for k in sample_chunks(num_samples, samples):
            with sampling_from(streams):
                lw = log_weights(model, guide, xc, ic, k, nesting=nesting)
            per_point = samples_last(lw)
            total = total + per_point.sum(-1)
            lse = logaddexp(lse, per_point.logsumexp(-1))
            tail.update(lw)
        elbos.append(total / num_samples)
        iwaes.append(lse - math.log(num_samples))
        khats.append(tail.khat())
    info = {"num_samples": num_samples}
    return (Estimate("elbo", torch.cat(elbos), info), Estimate(f"iwae_{num_samples}", torch.cat(iwaes), info),
            torch.cat(khats).to(x.device))
