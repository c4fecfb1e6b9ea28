"""The VAE generative model with a Bernoulli likelihood (Kingma & Welling 2014).

.. math:: z_n \\sim \\mathcal{N}(0, I_d), \\qquad x_n \\sim \\mathrm{Bernoulli}(\\mathrm{logits}=f_\\theta(z_n))

with an MLP decoder :math:`f_\\theta`. The default architecture is Cremer et al. (2018)'s: 50-200-200-784, ELU.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.nn import BernoulliDecoder, mlp

__all__ = ["BernoulliVAE"]


class BernoulliVAE(BernoulliDecoder, nn.Module):
    """The generative model ``p(z) p_theta(x | z)`` as a Pyro model: ``model(x, idx=None)``.

    Sample sites:

    - ``z``: latent, ``Normal(0, 1)`` with ``event_dim=1``, shape ``(N, z_dim)``, in plate ``data``;
    - ``x``: observed, ``Bernoulli(logits=decoder(z))`` with ``event_dim=1``, shape ``(N, x_dim)``.

    :param int x_dim: pixels per image (784).
    :param int z_dim: latent size.
    :param tuple hidden: decoder hidden layer sizes.
    :param str activation: ``"elu"`` (default), ``"relu"``, ``"tanh"``, ``"softplus"``.

    Example::

        >>> from ppl_vae.models import BernoulliVAE
        >>> model = BernoulliVAE(z_dim=2)
        >>> model.sample(16).shape          # binary images from the prior
        torch.Size([16, 784])
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden: tuple[int, ...] = (200, 200), activation: str = "elu"):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.decoder = mlp(z_dim, tuple(hidden), x_dim, activation)

    def forward(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None, num_points: int | None = None):
        """The model: ``z`` from the prior, ``x`` observed (or sampled when ``x`` is ``None``).

        :param x: ``(N, x_dim)`` in [0, 1], or ``None`` to sample ``num_points`` images.
        :param idx: ``(N,)`` data-point indices (unused: the generative model does not depend on them).
        :param int num_points: how many images to sample when ``x`` is ``None``.
        :returns: logits ``(..., N, x_dim)``.
        :raises DataError: for data the likelihood cannot score (:meth:`~ppl_vae.nn.BernoulliDecoder.check_data`).
        :raises ValueError: if neither ``x`` nor ``num_points`` is given.
        """
        if x is not None:
            self.check_data(x)
        elif num_points is None:
            raise ValueError("Expected x or num_points, got neither")
        n = x.shape[0] if x is not None else num_points
        p = next(self.decoder.parameters())
        loc = p.new_zeros(()).expand(n, self.z_dim)
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            logits = self.decoder(z)
            # validate_args=False: continuous intensities in [0, 1] are scored as cross-entropy
            # (check_images enforces the range); binary data get the exact Bernoulli log-likelihood.
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
        return logits


