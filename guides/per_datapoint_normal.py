"""The non-amortized fully-factorized Gaussian guide: a free mean and scale for every data point
(the :math:`q^*_{FFG}` of Cremer et al. 2018 once optimized per point)."""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.conventions import DATA_PLATE

__all__ = ["PerDatapointNormal"]


def _inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def _resolve_idx(x: torch.Tensor, idx: torch.Tensor | None, num_points: int) -> torch.Tensor:
    """The rows a per-datapoint guide uses for batch ``x``: ``idx`` (checked), or ``0..N-1`` for a full batch."""
    n = x.shape[0]
    if idx is None:
        if n != num_points:
            raise ValueError(f"Expected idx for a batch of {n} points out of {num_points}, got idx=None")
        return torch.arange(n, device=x.device)
    if idx.shape != (n,):
        raise ValueError(f"Expected idx of shape ({n},), got {tuple(idx.shape)}")
    if n and (idx.min() < 0 or idx.max() >= num_points):
        raise ValueError(f"idx out of range: this guide has parameters for {num_points} points, got max index {idx.max().item()}")
    return idx


class PerDatapointNormal(nn.Module):
    """Guide ``guide(x, idx)``: ``Normal(loc[idx], scale[idx]).to_event(1)`` per latent site, in plate ``data``.

    Parameters: ``loc_<site> (num_points, size)`` and ``raw_scale_<site> (num_points, size)``
    (``scale = softplus(raw_scale)``). ``idx`` selects the rows; ``idx=None`` means rows ``0..N-1``.

    :param dict sites: latent site name -> flat event size. :param int num_points: number of data points.
    :param dict init_loc: optional ``{site: (num_points, size)}``; default zeros (the prior's mean).
    :param dict init_scale: optional ``{site: (num_points, size)}``; default ones (the prior's scale).
    """

    def __init__(self, sites: dict[str, int], num_points: int, init_loc=None, init_scale=None):
        super().__init__()
        self.sites, self.num_points = dict(sites), num_points
        self.loc = nn.ParameterDict()
        self.raw_scale = nn.ParameterDict()
        for name, size in self.sites.items():
            loc = torch.zeros(num_points, size) if init_loc is None else init_loc[name].detach().clone()
            scale = torch.ones(num_points, size) if init_scale is None else init_scale[name].detach().clone()
            if loc.shape != (num_points, size) or scale.shape != (num_points, size):
                raise ValueError(
                    f"Expected init_loc/init_scale for site {name!r} of shape ({num_points}, {size}), got "
                    f"{tuple(loc.shape)} and {tuple(scale.shape)}"
                )
            self.loc[name] = nn.Parameter(loc)
            self.raw_scale[name] = nn.Parameter(_inv_softplus(scale.clamp_min(1e-6)))

    def distributions(self, idx: torch.Tensor) -> dict[str, dist.Distribution]:
        return {
            name: dist.Normal(self.loc[name][idx], softplus(self.raw_scale[name][idx])).to_event(1)
            for name in self.sites
        }

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        idx = _resolve_idx(x, idx, self.num_points)
        dists = self.distributions(idx)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return {name: pyro.sample(name, d) for name, d in dists.items()}
