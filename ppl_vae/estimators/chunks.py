"""Chunking over data points and samples so that estimator memory stays bounded."""
from __future__ import annotations

import torch

__all__ = ["point_chunks", "sample_chunks", "chunk_sizes", "logaddexp", "samples_last", "DEFAULT_MAX_ROWS"]

# rows = samples x data points evaluated in one vectorized pass. 2**11 rows of a 784-pixel decoder output take
# 6 MB in float32: small enough to stay in cache, large enough that Pyro's tracing (~1 ms per pass) is a few
# percent. Measured on 2 cores (benchmarks/iwae_speed.py): 2**11 rows is ~1.6x faster than 2**15.
DEFAULT_MAX_ROWS = 2**11


def point_chunks(x: torch.Tensor, idx: torch.Tensor | None, size: int):
    """Yield ``(x[a:b], idx[a:b] or None)``."""
    for a in range(0, x.shape[0], size):
        yield x[a : a + size], None if idx is None else idx[a : a + size]


def sample_chunks(num_samples: int, size: int):
    """Yield chunk sizes summing to ``num_samples``."""
    done = 0
    while done < num_samples:
        k = min(size, num_samples - done)
        yield k
        done += k


def chunk_sizes(num_samples: int, num_points: int, max_rows: int) -> tuple[int, int]:
    """``(points_per_chunk, samples_per_chunk)`` with their product at most ``max_rows`` (at least 1 each)."""
    samples = max(1, min(num_samples, max_rows))
    points = max(1, min(num_points, max_rows // samples))
    return points, samples


def samples_last(t: torch.Tensor) -> torch.Tensor:
    """``t (S, N, ...)`` with the sample dimension moved last and made contiguous, to reduce over samples with
    ``.sum(-1)``, ``.mean(-1)`` or ``.logsumexp(-1)``.

    A reduction over dim 0 vectorizes across the points and rounds differently for different ``N`` (measured: the
    ELBO of a point differed by one float32 ulp between a batch of 3 and one of 6); a reduction over the contiguous
    last dimension adds each point's values in the same order whatever the other points, so a point's estimate is
    bitwise the same alone or in a batch (per-point determinism, :mod:`ppl_vae.streams`).
    """
    return t.movedim(0, -1).contiguous()


def logaddexp(running: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """A running log-sum-exp over chunks: ``value`` if nothing has been accumulated yet (``None``)."""
    return value if running is None else torch.logaddexp(running, value)
