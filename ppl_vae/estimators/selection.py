"""log p̂(x) from several estimators without breaking the lower bound: choose with a pilot, report a fresh estimate.

Each estimator in use here (IWAE with any proposal or a mixture of them, AIS) is, per data point, a *stochastic lower
bound*: :math:`\\mathbb{E}[\\log \\hat p(x)] \\le \\log p(x)` (Jensen on an unbiased estimate of :math:`p(x)`). The
per-point maximum over several such estimates is not: it keeps the luckiest draw, and a heavy-tailed proposal's IWAE
can land above :math:`\\log p(x)` (Cremer et al. 2018 took that maximum). Here one estimator is chosen for the whole
study, on an independent *pilot* run (its own random numbers, a fraction of the budget): the candidate with the highest
mean pilot estimate over the points. The reported values are the chosen estimator's full-budget estimates, whose
randomness the choice never saw; conditionally on the choice they are still stochastic lower bounds, so
:math:`\\log\\hat p(x)` is one too, for every point. (A per-point choice on the pilot would keep that property too, but
compares a few-sample pilot of one estimator with a few-chain pilot of another point by point, which is noise; the
mean over the points is not.)
"""
from __future__ import annotations

import math

import torch

__all__ = ["select_by_pilot"]


def select_by_pilot(full: dict[str, torch.Tensor], pilot: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str]:
    """The full-budget estimates of the candidate whose pilot estimates have the highest mean over the points.

    :param full: ``{name: (N,)}`` full-budget estimates (nats), each a stochastic lower bound of ``log p(x)``.
    :param pilot: ``{name: (N,)}`` estimates of the same candidates from independent random numbers.
    :returns: ``(log_p_hat (N,), the chosen candidate's name)``.
    :raises ValueError: if the two dicts do not name the same candidates, or shapes differ.
    """
    if not full or set(full) != set(pilot):
        raise ValueError(f"Expected pilot estimates for exactly the candidates {sorted(full)}, got {sorted(pilot)}")
    shapes = {tuple(full[k].shape) for k in full} | {tuple(pilot[k].shape) for k in full}
    if len(shapes) != 1:
        raise ValueError(f"Expected every estimate to have the same (N,) shape, got {sorted(shapes)}")
    means = {k: pilot[k].double().mean().item() for k in full}
    best = max(full, key=lambda k: -float("inf") if math.isnan(means[k]) else means[k])
    return full[best], best
