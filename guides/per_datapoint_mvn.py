"""Non-amortized full-covariance Gaussian guides: a mean and a Cholesky factor for every data point, over the
model's whole unconstrained latent space — covariances *across* sites included.

The richest Gaussian family: for a model whose posterior is Gaussian (linear-Gaussian models, any number of sites) it
contains the exact posterior, so its approximation gap is zero — the test that tells a real gap from an optimizer's
failure.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints, transform_to

from ppl_vae.latent_space import LatentSpace

from .latent_guide import LatentSpaceGuide, PointIndex
from .per_datapoint_normal import initial_table

__all__ = ["PerDatapointMVN"]


class PerDatapointMVN(LatentSpaceGuide):
    """Guide ``guide(x, idx)``: ``MultivariateNormal(loc[idx], scale_tril[idx])`` over the latent space.

    Same constructor arguments as :class:`~ppl_vae.guides.PerDatapointNormal` (``init_scale`` gives the initial
    diagonal of the Cholesky factor).
    """

    def __init__(self, space: LatentSpace | dict[str, int], points, init_loc=None, init_scale=None):
        super().__init__(space)
        self.points = PointIndex(points)
        n = len(self.points)
        self.loc = nn.Parameter(initial_table(self.space, n, init_loc, 0.0, "init_loc"))
        scale = initial_table(self.space, n, init_scale, 1.0, "init_scale")
        self.raw_tril = nn.Parameter(transform_to(constraints.lower_cholesky).inv(torch.diag_embed(scale.clamp_min(1e-6))))

    def loc_scale_tril(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc (B, D), scale_tril (B, D, D))`` of the points ``idx (B,)``."""
        rows = self.points(idx)
        return self.loc[rows], transform_to(constraints.lower_cholesky)(self.raw_tril[rows])

    def latent_distribution(self, x, idx):
        loc, tril = self.loc_scale_tril(idx)
        return dist.MultivariateNormal(loc, scale_tril=tril)
