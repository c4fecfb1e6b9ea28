"""Elementwise monotonic rational-quadratic splines (Durkan et al. 2019) with parameters of one data point each.

Each coordinate of a point's latent vector passes through its own monotonic spline with ``count_bins`` bins on
``[-bound, bound]`` (the identity outside): a per-point, per-coordinate change of shape — skew, heavy or light
tails, several modes along an axis — that a Gaussian cannot take. It is the per-point flow for one-dimensional latent
spaces, where a coupling layer has nothing to condition on. The transform is Pyro's
:class:`~pyro.distributions.transforms.ConditionalSpline` (exact inverse and log-determinant) whose "network" is a
lookup of per-point parameter tables. The tables start where every spline is the identity (equal bins, unit
derivatives at the inner knots; Pyro fixes the outer ones at 0.999), so a flow started from a Gaussian starts at it.

References:

1. Durkan, C., Bekasov, A., Murray, I., Papamakarios, G. (2019). Neural spline flows. NeurIPS.
"""
from __future__ import annotations

import math

import pyro.distributions.transforms as T
import torch
from torch import nn

__all__ = ["PointSplineTable", "point_spline"]

_MIN_DERIVATIVE = 1e-3  # pyro.distributions.transforms.spline adds it to softplus(d)


class PointSplineTable(nn.Module):
    """Per-point spline parameters: ``forward(rows)`` -> widths ``(B, D*K)``, heights ``(B, D*K)`` and inner-knot
    derivatives ``(B, D*(K-1))``, unnormalized, as :class:`~pyro.distributions.transforms.ConditionalSpline` of
    order ``"quadratic"`` expects them from its network.

    :param int num_points: ``N``.
    :param int dim: ``D``, coordinates.
    :param int count_bins: ``K``, bins per spline.
    """

    def __init__(self, num_points: int, dim: int, count_bins: int):
        super().__init__()
        self.sizes = (dim * count_bins, dim * count_bins, dim * (count_bins - 1))
        identity = math.log(math.expm1(1.0 - _MIN_DERIVATIVE))  # softplus(d) + 1e-3 = 1
        table = torch.zeros(num_points, sum(self.sizes))
        table[:, 2 * dim * count_bins:] = identity
        self.table = nn.Parameter(table)

    def forward(self, rows: torch.Tensor):
        return self.table[rows].split(self.sizes, -1)


def point_spline(num_points: int, dim: int, count_bins: int = 8, bound: float = 4.0) -> T.ConditionalSpline:
    """Elementwise rational-quadratic splines over ``R^dim``, one per point and coordinate; ``.condition(rows)``
    gives the transform of the points ``rows (B,)``.

    :param float bound: the splines act on ``[-bound, bound]`` (standardized coordinates: 4 standard deviations).
    :raises ValueError: if ``count_bins < 2``.
    """
    if count_bins < 2:
        raise ValueError(f"Expected count_bins >= 2 for a spline, got {count_bins}")
    return T.ConditionalSpline(PointSplineTable(num_points, dim, count_bins), dim, count_bins, bound=bound,
                               order="quadratic")
