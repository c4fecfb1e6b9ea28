"""Non-amortized flow guides: a diagonal Gaussian followed by planar or radial flows whose parameters belong
to one data point each (the :math:`q^*_{Flow}` family of Cremer et al. 2018, optimized per point).

Pyro's ``ConditionalPlanar`` / ``ConditionalRadial`` take their parameters from a network of a context; here the
"network" is a lookup of per-point parameter tables by the data-point index, so every point has its own flow and
all points are optimized together in one batch.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.conventions import DATA_PLATE

from .per_datapoint_normal import _inv_softplus, _resolve_idx

__all__ = ["PerDatapointFlow", "LOCAL_FLOWS"]


class _Lookup(nn.Module):
    """Returns per-point parameter rows ``table[idx]`` split into the pieces a transform expects."""

    def __init__(self, num_points: int, sizes: tuple[int, ...], init_std: float = 0.01):
        super().__init__()
        self.sizes = sizes
        self.table = nn.Parameter(init_std * torch.randn(num_points, sum(sizes)))

    def forward(self, idx: torch.Tensor):
        return self.table[idx].split(self.sizes, -1)


def _planar(num_points, dim):
    return T.ConditionalPlanar(_Lookup(num_points, (1, dim, dim)))


def _radial(num_points, dim):
    return T.ConditionalRadial(_Lookup(num_points, (dim, 1, 1)))


LOCAL_FLOWS = {"planar": _planar, "radial": _radial}


class PerDatapointFlow(nn.Module):
    """Guide ``guide(x, idx)``: per latent site, ``Normal(loc[idx], scale[idx])`` through ``num_flows`` planar
    (or radial) transforms with per-point parameters; site shape ``(N, size)`` in plate ``data``.

    Same constructor arguments as :class:`~ppl_vae.guides.PerDatapointNormal`, plus ``num_flows`` and ``flow``.
    The flow starts near the identity, so initialized from an encoder's Gaussian it starts at that Gaussian.
    """

    def __init__(self, sites: dict[str, int], num_points: int, init_loc=None, init_scale=None, num_flows: int = 4,
                 flow: str = "planar"):
        super().__init__()
        if flow not in LOCAL_FLOWS:
            raise ValueError(f"Unknown per-datapoint flow {flow!r}; expected one of {sorted(LOCAL_FLOWS)}")
        self.sites, self.num_points = dict(sites), num_points
        self.loc, self.raw_scale = nn.ParameterDict(), nn.ParameterDict()
        self.transforms = nn.ModuleDict()
        for name, size in self.sites.items():
            loc = torch.zeros(num_points, size) if init_loc is None else init_loc[name].detach().clone()
            scale = torch.ones(num_points, size) if init_scale is None else init_scale[name].detach().clone()
            self.loc[name] = nn.Parameter(loc)
            self.raw_scale[name] = nn.Parameter(_inv_softplus(scale.clamp_min(1e-6)))
            self.transforms[name] = nn.ModuleList([LOCAL_FLOWS[flow](num_points, size) for _ in range(num_flows)])

    def distributions(self, idx: torch.Tensor) -> dict[str, dist.Distribution]:
        out = {}
        for name in self.sites:
            base = dist.Normal(self.loc[name][idx], softplus(self.raw_scale[name][idx])).to_event(1)
            out[name] = dist.TransformedDistribution(base, [t.condition(idx) for t in self.transforms[name]])
        return out

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        idx = _resolve_idx(x, idx, self.num_points)
        dists = self.distributions(idx)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return {name: pyro.sample(name, d) for name, d in dists.items()}
