"""Amortized normalizing-flow guides: the encoder's Gaussian followed by conditional flows conditioned on an
encoder context (Rezende & Mohamed 2015; Kingma et al. 2016) — the "Flow" encoder of Cremer et al. (2018).

.. math:: z_0 \\sim \\mathcal{N}(\\mu_\\phi(x), \\mathrm{diag}\\,\\sigma_\\phi(x)^2), \\qquad
          z = f_K(\\cdots f_1(z_0; h_\\phi(x)) \\cdots; h_\\phi(x))

The transforms are Pyro's conditional transforms (``pyro.distributions.transforms``): ``"iaf"``
(``conditional_affine_autoregressive``, inverse autoregressive flow), ``"planar"``, ``"radial"``, ``"spline"``
(``conditional_spline``), ``"coupling"`` (``conditional_affine_coupling``).
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.conventions import DATA_PLATE, vector_site_sizes
from ppl_vae.nn import encoder_input, mlp

__all__ = ["AmortizedFlow", "FLOWS", "conditional_flow"]

MIN_SCALE = 1e-4


def _iaf(dim, context_dim, hidden):
    return T.conditional_affine_autoregressive(dim, context_dim, hidden_dims=list(hidden))


def _coupling(dim, context_dim, hidden):
    return T.conditional_affine_coupling(dim, context_dim, hidden_dims=list(hidden))


FLOWS = {
    "iaf": _iaf,
    "planar": lambda dim, context_dim, hidden: T.conditional_planar(dim, context_dim, hidden_dims=list(hidden)),
    "radial": lambda dim, context_dim, hidden: T.conditional_radial(dim, context_dim, hidden_dims=list(hidden)),
    "spline": lambda dim, context_dim, hidden: T.conditional_spline(dim, context_dim, hidden_dims=list(hidden)),
    "coupling": _coupling,
}


def conditional_flow(kind: str, dim: int, context_dim: int, hidden: tuple[int, ...]):
    """One Pyro conditional transform of the given ``kind`` (see :data:`FLOWS`)."""
    if kind not in FLOWS:
        raise ValueError(f"Unknown flow {kind!r}; expected one of {sorted(FLOWS)}")
    return FLOWS[kind](dim, context_dim, hidden)


class AmortizedFlow(nn.Module):
    """Guide ``guide(x, idx=None)``: per latent site, ``Normal(loc(x), scale(x))`` pushed through ``num_flows``
    conditional transforms with context ``h(x)``; site shape ``(N, size)`` in plate ``data``.

    :param int x_dim: input size. :param dict sites: latent site name -> flat event size.
    :param tuple hidden: encoder hidden sizes. :param int num_flows: transforms per site.
    :param str flow: kind of transform (:data:`FLOWS`). :param int context_dim: size of ``h(x)``.
    :param tuple flow_hidden: hidden sizes of each transform's conditioning network.
    """

    def __init__(self, x_dim: int, sites: dict[str, int], hidden=(200, 200), num_flows: int = 2, flow: str = "iaf",
                 context_dim: int = 50, flow_hidden=(100,), activation: str = "elu"):
        super().__init__()
        self.x_dim, self.sites, self.context_dim, self.flow = x_dim, dict(sites), context_dim, flow
        self.encoder = mlp(x_dim, tuple(hidden), 2 * sum(self.sites.values()) + context_dim, activation)
        self.transforms = nn.ModuleDict({
            name: nn.ModuleList([conditional_flow(flow, size, context_dim, tuple(flow_hidden)) for _ in range(num_flows)])
            for name, size in self.sites.items()
        })

    @classmethod
    def for_model(cls, model, x: torch.Tensor, **kwargs) -> AmortizedFlow:
        """A flow encoder for every latent site of ``model`` (found by tracing ``model(x)``)."""
        return cls(x.reshape(x.shape[0], -1).shape[1], vector_site_sizes(model, x, "AmortizedFlow"), **kwargs)

    def distributions(self, x: torch.Tensor) -> dict[str, dist.Distribution]:
        """``{site: TransformedDistribution}`` with batch shape ``(N,)`` and event shape ``(size,)``."""
        out = self.encoder(encoder_input(x, self.x_dim))
        context = torch.tanh(out[..., -self.context_dim:])
        dists, start = {}, 0
        for name, size in self.sites.items():
            loc, raw = out[..., start : start + size], out[..., start + size : start + 2 * size]
            base = dist.Normal(loc, softplus(raw) + MIN_SCALE).to_event(1)
            flows = [t.condition(context) for t in self.transforms[name]]
            dists[name] = dist.TransformedDistribution(base, flows)
            start += 2 * size
        return dists

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        dists = self.distributions(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return {name: pyro.sample(name, d) for name, d in dists.items()}
