"""Affine coupling layers (RealNVP, Dinh et al. 2017) whose conditioner belongs to one data point each.

A coupling layer keeps the first ``d`` coordinates and moves the others by an affine map computed from them:

.. math:: y_{1:d} = x_{1:d}, \\qquad y_{d+1:D} = x_{d+1:D} \\odot \\exp s_n(x_{1:d}) + t_n(x_{1:d})

Here :math:`(t_n, s_n)` is a small MLP *of data point* :math:`n`, with a linear skip connection:
:math:`[t_n, s_n](h) = W^{(2)}_n\\,\\mathrm{ELU}(W^{(1)}_n h + b^{(1)}_n) + L_n h + b^{(2)}_n`. Its weights are rows of
per-point tables, looked up by the points' rows, so that one batched ``einsum`` evaluates every point's own network:
all points are optimized together, as in Pyro's conditional transforms where the "context" is the point's row.

The shift and log-scale are bounded smoothly, :math:`10 \\tanh(t/10)` and :math:`2.5 \\tanh(s/2.5)`:
Pyro's own clip of the log-scale passes the gradient through, a long fit drove the raw values without bound, and
float32 rounding in the clip then gave log-densities 1e13 nats off.
The output layer (:math:`W^{(2)}, L, b^{(2)}`) starts at zero, so the layer starts at the identity: a flow started
from a fitted Gaussian is exactly that Gaussian. The skip connection lets a layer shear one half by a linear function
of the other (a correlated Gaussian is two such shears of a diagonal one). The layer itself is Pyro's
:class:`~pyro.distributions.transforms.ConditionalAffineCoupling` (its inverse is exact and its ``log_scale`` is
clipped to ``[-5, 3]``), so a guide built from it scores points it did not sample.

References:

1. Dinh, L., Sohl-Dickstein, J., Bengio, S. (2017). Density estimation using Real NVP. ICLR.
2. Cremer, C., Li, X., Duvenaud, D. (2018). Inference suboptimality in variational autoencoders. ICML.
"""
from __future__ import annotations

import math

import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn.functional import elu

__all__ = ["PointCouplingNet", "point_affine_coupling", "SHIFT_BOUND", "LOG_SCALE_BOUND"]

SHIFT_BOUND = 10.0
"""A layer's shift is ``SHIFT_BOUND * tanh(t / SHIFT_BOUND)`` (standardized coordinates: ten standard deviations)."""

LOG_SCALE_BOUND = 2.5
"""A layer's log-scale is ``LOG_SCALE_BOUND * tanh(s / LOG_SCALE_BOUND)``, inside Pyro's clip ``[-5, 3]``."""


class PointCouplingNet(nn.Module):
    """``num_points`` MLPs ``R^d_in -> (R^d_out, R^d_out)`` (shift, log-scale), one per data point.

    :param int num_points: ``N``, rows of the tables.
    :param int d_in: conditioning coordinates.
    :param int d_out: coordinates moved by the layer.
    :param int hidden: hidden units of each point's network.

    ``forward(h, context=rows)``: ``h (..., B, d_in)``, ``rows (B,)`` -> two ``(..., B, d_out)`` tensors.
    """

    def __init__(self, num_points: int, d_in: int, d_out: int, hidden: int):
        super().__init__()
        self.d_out = d_out
        self.w1 = nn.Parameter(torch.randn(num_points, hidden, d_in) / math.sqrt(d_in))
        self.b1 = nn.Parameter(torch.zeros(num_points, hidden))
        self.w2 = nn.Parameter(torch.zeros(num_points, 2 * d_out, hidden))
        self.skip = nn.Parameter(torch.zeros(num_points, 2 * d_out, d_in))
        self.b2 = nn.Parameter(torch.zeros(num_points, 2 * d_out))

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = context
        a = elu(torch.einsum("...nd,nhd->...nh", h, self.w1[rows]) + self.b1[rows])
        out = torch.einsum("...nh,noh->...no", a, self.w2[rows]) + torch.einsum("...nd,nod->...no", h, self.skip[rows])
        out = out + self.b2[rows]
        # soft bounds (0 at 0, so the identity start is kept): Pyro's coupling clips the log-scale to [-5, 3] but lets
        # the gradient through the clip, which drove a 50-D fit's raw log-scales without bound until float32 rounding
        # in the clip gave log-densities 1e13 nats off; tanh's gradient vanishes instead, and bounded shifts keep the
        # inverse (the density of points the flow did not sample) accurate
        shift = SHIFT_BOUND * torch.tanh(out[..., : self.d_out] / SHIFT_BOUND)
        log_scale = LOG_SCALE_BOUND * torch.tanh(out[..., self.d_out:] / LOG_SCALE_BOUND)
        return shift, log_scale


def point_affine_coupling(num_points: int, dim: int, hidden: int) -> T.ConditionalAffineCoupling:
    """An affine coupling layer over ``R^dim`` (``dim >= 2``) whose conditioner is a :class:`PointCouplingNet`;
    ``.condition(rows)`` gives the layer of the points ``rows (B,)``. The first ``dim // 2`` coordinates condition
    the others.

    :raises ValueError: if ``dim < 2`` (a coupling layer needs two halves).
    """
    if dim < 2:
        raise ValueError(f"Expected a latent dimension >= 2 for an affine coupling layer (two halves), got {dim}; use "
                         "the elementwise flow='spline' in one dimension")
    split = dim // 2
    return T.ConditionalAffineCoupling(split, PointCouplingNet(num_points, split, dim - split, hidden))
