"""Pareto k̂ of importance weights, per data point (Vehtari et al. 2024; Yao et al. 2018).

k̂ is the shape of a generalized Pareto distribution fitted to the largest weights ``p(x, z) / q(z | x)``. Below
0.5 the weights have finite variance; above :func:`khat_threshold` (0.7 for 2,154 samples or more, lower for
fewer) the IWAE estimate with this proposal is unreliable (its variance may be infinite and a single realization
may land far above log p(x)). The fit is Pyro's :func:`pyro.ops.stats.fit_generalized_pareto`, applied per data
point exactly as :func:`pyro.infer.importance.psis_diagnostic` applies it to a whole model; the tail size and the
fit agree with :func:`arviz.psislw` to rounding error (tested).

References:

- Vehtari, Simpson, Gelman, Yao & Gabry (2024). Pareto smoothed importance sampling. JMLR 25(72):1-58.
- Yao, Vehtari, Simpson & Gelman (2018). Yes, but did it work?: Evaluating variational inference. ICML.
"""
from __future__ import annotations

import math

import torch
from pyro.ops.stats import fit_generalized_pareto

__all__ = ["pareto_khat", "khat_threshold", "tail_size", "TopLogWeights", "KHAT_RELIABLE"]

KHAT_RELIABLE = 0.7
"""The cap of :func:`khat_threshold`: the threshold for 2,154 samples or more."""


def khat_threshold(num_samples: int) -> float:
    """The largest Pareto k̂ at which ``num_samples`` importance weights still give a reliable estimate:
    :math:`\\min(1 - 1 / \\log_{10} S, 0.7)` (Vehtari et al. 2024), as ArviZ's ``loo`` computes its
    ``good_k``. With few samples the threshold is lower: 0.5 for ``S = 100``, 0.67 for ``S = 1000``.

    For ``S <= 10`` it is 0 (ArviZ's formula gives 0 at ``S = 10`` and less below; :func:`pareto_khat` is infinite
    there anyway, since the fit needs more than 10 tail weights).

    :param int num_samples: ``S``, the number of importance weights per data point.
    :returns: the threshold; a k̂ strictly below it is reliable.
    :raises ValueError: if ``num_samples < 1``.
    """
    if num_samples < 1:
        raise ValueError(f"Expected num_samples >= 1 for a Pareto k-hat threshold, got {num_samples}")
    if num_samples <= 10:
        return 0.0
    return min(1.0 - 1.0 / math.log10(num_samples), KHAT_RELIABLE)


def tail_size(num_samples: int) -> int:
    """The number of largest weights the Pareto fit uses: ``ceil(min(0.2 S, 3 sqrt(S)))``."""
    return int(math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples))))


def _khat_1d(top: torch.Tensor) -> float:
    """``top``: the ``M + 1`` largest log-weights of one point, ascending."""
    lw = top.double() - top.max()
    cutoff = max(math.log(1e-15), lw[0].item())
    tail = lw[lw > cutoff]
    if tail.numel() < 10:
        return float("inf")
    return fit_generalized_pareto(tail.exp() - math.exp(cutoff))[0]


def pareto_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """k̂ per data point from log-weights ``(S, N)``; returns ``(N,)`` (``inf`` where ``S`` is too small)."""
    tracker = TopLogWeights(log_weights.shape[0], log_weights.shape[1], log_weights.device, log_weights.dtype)
    tracker.update(log_weights)
    return tracker.khat()


class TopLogWeights:
    """Keeps each point's ``tail_size(S) + 1`` largest log-weights while weights arrive in chunks, so that k̂ of
    ``S`` weights can be computed without storing them all."""

    def __init__(self, num_samples: int, num_points: int, device=None, dtype=None):
        self.keep = tail_size(num_samples) + 1
        self.top = None if dtype is None else torch.full((0, num_points), -math.inf, device=device, dtype=dtype)

    def update(self, log_weights: torch.Tensor) -> None:
        """Add a chunk of log-weights ``(s, N)``."""
        lw = log_weights.detach()
        both = lw if self.top is None else torch.cat([self.top, lw], 0)
        self.top = both.topk(min(self.keep, both.shape[0]), dim=0).values

    def khat(self) -> torch.Tensor:
        """k̂ per point ``(N,)``."""
        top = self.top.sort(0).values.cpu()
        return torch.tensor([_khat_1d(top[:, n]) for n in range(top.shape[1])], dtype=torch.float64)
