"""Chunking over data points and samples so that estimator memory stays bounded."""
from __future__ import annotations

import torch

__all__ = ["point_chunks", "sample_chunks", "chunk_sizes", "logaddexp", "DEFAULT_MAX_ROWS"]

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


def logaddexp(running: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """A running log-sum-exp over chunks: ``value`` if nothing has been accumulated yet (``None``)."""
    return value if running is None else torch.logaddexp(running, value)
