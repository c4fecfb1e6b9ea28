"""The amortized diagonal-Gaussian encoder guide (Kingma & Welling 2014; the FFG encoder of Cremer et al. 2018), for
any model: a Gaussian in the model's unconstrained latent space, pushed into each site's support.

.. math:: q_\\phi(u_n | x_n) = \\mathcal{N}(\\mu_\\phi(x_n), \\mathrm{diag}\\,\\sigma_\\phi(x_n)^2), \\qquad
          z_{n,k} = T_k(u_{n,k}), \\quad T_k = \\mathrm{biject\\_to}(\\mathrm{support}_k)

A real-valued site is an ordinary ``Normal(...).to_event()``; a positive one a log-normal, a simplex a logistic-normal
(stick-breaking), and so on: the guide always lives in the model's support.
"""
from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.conventions import default_idx, support_name
from ppl_vae.latent_space import LatentSpace, as_latent_space
from ppl_vae.nn import encoder_input, mlp

__all__ = ["AmortizedNormal", "MIN_SCALE", "flat_input"]

MIN_SCALE = 1e-4


def flat_input(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x (N, ...)`` flattened to ``(N, x_dim)`` in the floating dtype of ``like`` (counts and codes included),
    checked by :func:`~ppl_vae.nn.encoder_input` (size; NaN under Pyro's validation)."""
    return encoder_input(x, like.shape[-1]).to(like.dtype)


class AmortizedNormal(nn.Module):
    """Guide ``guide(x, idx=None)``: an MLP maps ``x (N, x_dim)`` to a mean and a scale for every coordinate of the
    model's latent space; each site is sampled in the model's plates, as a Gaussian pushed into its support.

    Build it for any model with :meth:`for_model`.

    :param int x_dim: input size (``x`` is flattened per point).
    :param space: the model's :class:`~ppl_vae.latent_space.LatentSpace`, or ``{site: size}`` for real vector sites
        in a data plate at ``dim=-1`` (:meth:`~ppl_vae.latent_space.LatentSpace.from_sites`).
    :param tuple hidden: hidden layer sizes (Cremer et al.: ``(200, 200)``).
    :param str activation: ``"elu"``, ``"relu"``, ``"tanh"`` or ``"softplus"``.
    :raises ValueError: if the model has discrete latent sites that are not enumerated (naming the site).

    Example::

        >>> import torch
        >>> from ppl_vae.conventions import check_pair
        >>> from ppl_vae.guides import AmortizedNormal
        >>> from ppl_vae.models import BernoulliVAE
        >>> model, x = BernoulliVAE(z_dim=3, hidden=(16,)), torch.rand(5, 784).bernoulli()
        >>> guide = AmortizedNormal.for_model(model, x, hidden=(200, 200))
        >>> list(check_pair(model, guide, x))          # samples exactly the model's latent sites
        ['z']
    """

    def __init__(self, x_dim: int, space: LatentSpace | dict[str, int], hidden: tuple[int, ...] = (200, 200),
                 activation: str = "elu"):
        super().__init__()
        space = as_latent_space(space)
        space.require_continuous("AmortizedNormal")
        self.x_dim, self.space = x_dim, space
        self.encoder = mlp(x_dim, tuple(hidden), 2 * space.dim, activation)

    @classmethod
    def for_model(cls, model, x: torch.Tensor, idx: torch.Tensor | None = None, **kwargs) -> AmortizedNormal:
        """An encoder for every continuous latent site of ``model`` (found by tracing ``model(x, idx)``)."""
        return cls(x.reshape(x.shape[0], -1).shape[1], LatentSpace(model, x, idx), **kwargs)

    def latent_loc_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)``, each ``(N, D)``: the Gaussian over the latent space for ``x (N, ...)``."""
        out = self.encoder(flat_input(x, self.encoder[0].weight))
        loc, raw = out[..., : self.space.dim], out[..., self.space.dim:]
        return loc, softplus(raw) + MIN_SCALE

    def latent_log_prob(self, x: torch.Tensor, idx: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
        """``log q(u | x)`` ``(S, N)`` of points ``u (S, N, D)`` of the latent space."""
        loc, scale = self.latent_loc_scale(x)
        return dist.Normal(loc, scale).to_event(1).log_prob(u)

    def distributions(self, x: torch.Tensor) -> dict[str, dist.Distribution]:
        """``{site: distribution}`` with the model's batch shape for ``x`` (``N`` on the data plate's dim) and event
        shape: a ``Normal(...).to_event()`` for real sites, a ``TransformedDistribution`` by
        ``biject_to(support)`` for constrained ones."""
        loc, scale = self.latent_loc_scale(x)
        n = x.shape[0]
        out = {}
        for b in self.space.blocks:
            sl = slice(b.offset, b.offset + b.size)
            mu = self.space._natural(b, loc[None, :, sl], n)[0]
            sigma = self.space._natural(b, scale[None, :, sl], n)[0]
            base = dist.Normal(mu, sigma).to_event(len(b.unconstrained_event_shape))
            out[b.name] = base if support_name(b.site.support) == "real" else \
                dist.TransformedDistribution(base, [b.transform])
        return out

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        idx = default_idx(x, idx)
        dists = self.distributions(x)
        plates = self.space.plates(x, idx)
        out = {}
        for b in self.space.blocks:
            with contextlib.ExitStack() as stack:
                for f in b.frames:
                    stack.enter_context(plates[f.name])
                out[b.name] = pyro.sample(b.name, dists[b.name])
        return out
