"""The amortized diagonal-Gaussian encoder guide (Kingma & Welling 2014; the FFG encoder of Cremer et al. 2018).

.. math:: q_\\phi(z_n | x_n) = \\mathcal{N}(\\mu_\\phi(x_n), \\mathrm{diag}\\,\\sigma_\\phi(x_n)^2)
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.conventions import DATA_PLATE, vector_site_sizes
from ppl_vae.nn import encoder_input, mlp

__all__ = ["AmortizedNormal"]

MIN_SCALE = 1e-4


class AmortizedNormal(nn.Module):
    """Guide ``guide(x, idx=None)``: an MLP maps ``x (N, x_dim)`` to a mean and scale for every latent site.

    Sites: one per entry of ``sites`` (name -> event size), each ``Normal(loc, scale).to_event(1)`` with shape
    ``(N, size)`` in plate ``data``. Build it for any model with :meth:`for_model`.

    :param int x_dim: input size. :param dict sites: latent site name -> flat event size.
    :param tuple hidden: hidden layer sizes (Cremer et al.: ``(200, 200)``). :param str activation: ``"elu"``.
    """

    def __init__(self, x_dim: int, sites: dict[str, int], hidden: tuple[int, ...] = (200, 200), activation: str = "elu"):
        super().__init__()
        if not sites:
            raise ValueError("AmortizedNormal needs at least one latent site")
        self.x_dim, self.sites = x_dim, dict(sites)
        self.encoder = mlp(x_dim, tuple(hidden), 2 * sum(self.sites.values()), activation)

    @classmethod
    def for_model(cls, model, x: torch.Tensor, **kwargs) -> AmortizedNormal:
        """An encoder for every latent site of ``model`` (found by tracing ``model(x)``)."""
        return cls(x.reshape(x.shape[0], -1).shape[1], vector_site_sizes(model, x, "AmortizedNormal"), **kwargs)

    def distributions(self, x: torch.Tensor) -> dict[str, dist.Distribution]:
        """``{site: Normal(loc (N, size), scale (N, size)).to_event(1)}`` for ``x (N, x_dim)``."""
        out = self.encoder(encoder_input(x, self.x_dim))
        dists, start = {}, 0
        for name, size in self.sites.items():
            loc, raw = out[..., start : start + size], out[..., start + size : start + 2 * size]
            dists[name] = dist.Normal(loc, softplus(raw) + MIN_SCALE).to_event(1)
            start += 2 * size
        return dists

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        dists = self.distributions(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return {name: pyro.sample(name, d) for name, d in dists.items()}
