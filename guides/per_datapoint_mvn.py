"""Non-amortized full-covariance Gaussian guides: a mean and a Cholesky factor for every data point.

The richest Gaussian family: for a model whose posterior is Gaussian (the linear-Gaussian model) it contains the
exact posterior, so its approximation gap is zero — the test that tells a real gap from an optimizer's failure.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints, transform_to

from ppl_vae.conventions import DATA_PLATE

from .per_datapoint_normal import _resolve_idx

__all__ = ["PerDatapointMVN"]


class PerDatapointMVN(nn.Module):
    """Guide ``guide(x, idx)``: ``MultivariateNormal(loc[idx], scale_tril[idx])`` per latent site, in plate ``data``.

    Same constructor arguments as :class:`~ppl_vae.guides.PerDatapointNormal` (``init_scale`` gives the initial diagonal).
    """

    def __init__(self, sites: dict[str, int], num_points: int, init_loc=None, init_scale=None):
        super().__init__()
        self.sites, self.num_points = dict(sites), num_points
        self.loc, self.raw_tril = nn.ParameterDict(), nn.ParameterDict()
        to_tril = transform_to(constraints.lower_cholesky)
        for name, size in self.sites.items():
            loc = torch.zeros(num_points, size) if init_loc is None else init_loc[name].detach().clone()
            scale = torch.ones(num_points, size) if init_scale is None else init_scale[name].detach().clone()
            self.loc[name] = nn.Parameter(loc)
            self.raw_tril[name] = nn.Parameter(to_tril.inv(torch.diag_embed(scale.clamp_min(1e-6))))

    def distributions(self, idx: torch.Tensor) -> dict[str, dist.Distribution]:
        to_tril = transform_to(constraints.lower_cholesky)
        return {name: dist.MultivariateNormal(self.loc[name][idx], scale_tril=to_tril(self.raw_tril[name][idx]))
                for name in self.sites}

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        idx = _resolve_idx(x, idx, self.num_points)
        dists = self.distributions(idx)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return {name: pyro.sample(name, d) for name, d in dists.items()}
