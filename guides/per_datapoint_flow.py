"""Non-amortized flow guides: a diagonal Gaussian over the latent space followed by planar or radial flows whose
parameters belong to one data point each (a :math:`q^*_{Flow}` family of Cremer et al. 2018, optimized per point).

Pyro's ``ConditionalPlanar`` / ``ConditionalRadial`` take their parameters from a network of a context; here the
"network" is a lookup of per-point parameter tables by the data point's row, so every point has its own flow and all
points are optimized together in one batch. Planar and radial flows cannot invert: this guide scores only what it
sampled (pyro issue 2718).
"""
from __future__ import annotations

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.latent_space import LatentSpace

from .latent_guide import LatentSpaceGuide, PointIndex
from .per_datapoint_normal import initial_table, inverse_softplus

__all__ = ["PerDatapointFlow", "LOCAL_FLOWS"]


class _Lookup(nn.Module):
    """Returns per-point parameter rows ``table[rows]`` split into the pieces a transform expects."""

    def __init__(self, num_points: int, sizes: tuple[int, ...], init_std: float = 0.01):
        super().__init__()
        self.sizes = sizes
        self.table = nn.Parameter(init_std * torch.randn(num_points, sum(sizes)))

    def forward(self, rows: torch.Tensor):
        return self.table[rows].split(self.sizes, -1)


def _planar(num_points, dim):
    return T.ConditionalPlanar(_Lookup(num_points, (1, dim, dim)))


def _radial(num_points, dim):
    return T.ConditionalRadial(_Lookup(num_points, (dim, 1, 1)))


LOCAL_FLOWS = {"planar": _planar, "radial": _radial}


class PerDatapointFlow(LatentSpaceGuide):
    """Guide ``guide(x, idx)``: ``Normal(loc[idx], scale[idx])`` over the latent space through ``num_flows`` planar
    (or radial) transforms with per-point parameters.

    Same constructor arguments as :class:`~ppl_vae.guides.PerDatapointNormal`, plus ``num_flows`` and ``flow``.
    The flows start near the identity, so initialized from an encoder's Gaussian the guide starts at that Gaussian.

    :raises ValueError: for an unknown ``flow``.
    """

    def __init__(self, space: LatentSpace | dict[str, int], points, init_loc=None, init_scale=None, num_flows: int = 4,
                 flow: str = "planar"):
        if flow not in LOCAL_FLOWS:
            raise ValueError(f"Unknown per-datapoint flow {flow!r}; expected one of {sorted(LOCAL_FLOWS)}")
        super().__init__(space)
        self.points = PointIndex(points)
        n = len(self.points)
        self.loc = nn.Parameter(initial_table(self.space, n, init_loc, 0.0, "init_loc"))
        scale = initial_table(self.space, n, init_scale, 1.0, "init_scale")
        self.raw_scale = nn.Parameter(inverse_softplus(scale.clamp_min(1e-6)))
        self.transforms = nn.ModuleList([LOCAL_FLOWS[flow](n, self.space.dim) for _ in range(num_flows)])

    def latent_distribution(self, x, idx):
        rows = self.points(idx)
        base = dist.Normal(self.loc[rows], softplus(self.raw_scale[rows])).to_event(1)
        return dist.TransformedDistribution(base, [t.condition(rows) for t in self.transforms])
