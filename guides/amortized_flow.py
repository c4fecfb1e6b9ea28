"""Amortized normalizing-flow guides: the encoder's Gaussian over the model's latent space followed by conditional
flows conditioned on an encoder context (Rezende & Mohamed 2015; Kingma et al. 2016) — the "Flow" encoder of
Cremer et al. (2018).

.. math:: u_0 \\sim \\mathcal{N}(\\mu_\\phi(x), \\mathrm{diag}\\,\\sigma_\\phi(x)^2), \\qquad
          u = f_K(\\cdots f_1(u_0; h_\\phi(x)) \\cdots; h_\\phi(x)), \\qquad z = T(u)

The flow acts on the whole latent vector (every site together, :class:`~ppl_vae.latent_space.LatentSpace`). The
transforms are Pyro's conditional transforms (``pyro.distributions.transforms``): ``"iaf"``
(``conditional_affine_autoregressive``, inverse autoregressive flow), ``"planar"``, ``"radial"``, ``"spline"``
(``conditional_spline``), ``"coupling"`` (``conditional_affine_coupling``). Planar and radial flows cannot invert, so
such a guide scores only what it sampled (no AIS from it; pyro issue 2718).
"""
from __future__ import annotations

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.latent_space import LatentSpace
from ppl_vae.nn import mlp

from .amortized_normal import MIN_SCALE, flat_input
from .latent_guide import LatentSpaceGuide

__all__ = ["AmortizedFlow", "FLOWS", "conditional_flow"]


def _iaf(dim, context_dim, hidden):
    return T.conditional_affine_autoregressive(dim, context_dim, hidden_dims=list(hidden))


def _coupling(dim, context_dim, hidden):
    if dim < 2:
        raise ValueError(f"Expected a latent space of at least 2 dimensions for affine coupling flows, got {dim}")
    return T.conditional_affine_coupling(dim, context_dim, hidden_dims=list(hidden))


FLOWS = {
    "iaf": _iaf,
    "planar": lambda dim, context_dim, hidden: T.conditional_planar(dim, context_dim, hidden_dims=list(hidden)),
    "radial": lambda dim, context_dim, hidden: T.conditional_radial(dim, context_dim, hidden_dims=list(hidden)),
    "spline": lambda dim, context_dim, hidden: T.conditional_spline(dim, context_dim, hidden_dims=list(hidden)),
    "coupling": _coupling,
}


def conditional_flow(kind: str, dim: int, context_dim: int, hidden: tuple[int, ...]):
    """One Pyro conditional transform of the given ``kind`` (see :data:`FLOWS`).

    :raises ValueError: for an unknown ``kind``.
    """
    if kind not in FLOWS:
        raise ValueError(f"Unknown flow {kind!r}; expected one of {sorted(FLOWS)}")
    return FLOWS[kind](dim, context_dim, hidden)


class AmortizedFlow(LatentSpaceGuide):
    """Guide ``guide(x, idx=None)``: ``Normal(loc(x), scale(x))`` over the latent space pushed through ``num_flows``
    conditional transforms with context ``h(x)``, then into every site of the model.

    :param int x_dim: input size (``x`` is flattened per point).
    :param space: the model's :class:`~ppl_vae.latent_space.LatentSpace`, or ``{site: size}`` for real vector sites.
    :param tuple hidden: encoder hidden sizes.
    :param int num_flows: transforms.
    :param str flow: kind of transform (:data:`FLOWS`).
    :param int context_dim: size of ``h(x)``.
    :param tuple flow_hidden: hidden sizes of each transform's conditioning network.
    :param str activation: the encoder's activation.
    """

    def __init__(self, x_dim: int, space: LatentSpace | dict[str, int], hidden=(200, 200), num_flows: int = 2,
                 flow: str = "iaf", context_dim: int = 50, flow_hidden=(100,), activation: str = "elu"):
        super().__init__(space)
        self.x_dim, self.context_dim, self.flow = x_dim, context_dim, flow
        self.encoder = mlp(x_dim, tuple(hidden), 2 * self.space.dim + context_dim, activation)
        self.transforms = nn.ModuleList([conditional_flow(flow, self.space.dim, context_dim, tuple(flow_hidden))
                                         for _ in range(num_flows)])

    @classmethod
    def for_model(cls, model, x: torch.Tensor, idx: torch.Tensor | None = None, **kwargs) -> AmortizedFlow:
        """A flow encoder over every continuous latent site of ``model`` (found by tracing ``model(x, idx)``)."""
        return cls(x.reshape(x.shape[0], -1).shape[1], LatentSpace(model, x, idx), **kwargs)

    def latent_distribution(self, x: torch.Tensor, idx: torch.Tensor) -> dist.Distribution:
        """A ``TransformedDistribution`` with batch shape ``(N,)`` and event shape ``(D,)``."""
        out = self.encoder(flat_input(x, self.encoder[0].weight))
        d = self.space.dim
        context = torch.tanh(out[..., 2 * d:])
        base = dist.Normal(out[..., :d], softplus(out[..., d: 2 * d]) + MIN_SCALE).to_event(1)
        return dist.TransformedDistribution(base, [t.condition(context) for t in self.transforms])
