"""The adversarial autoencoder (Makhzani et al. 2015): a deterministic autoencoder whose codes are pushed toward
the prior by a discriminator in latent space, in place of the VAE's KL term.

As a Pyro model/guide pair:

.. math::

    \\text{model:}\\quad z_n \\sim \\mathcal{N}(0, I_d)\\ \\text{(masked out of the ELBO)}, \\qquad
    x_n \\sim \\mathrm{Bernoulli}(\\mathrm{logits} = \\mathrm{Dec}(z_n)); \\qquad
    \\text{guide:}\\quad z_n \\sim \\delta(\\mathrm{Enc}(x_n)).

The prior site is ``Normal(0, 1).to_event(1).mask(False)``: the model still *generates* from ``N(0, I)``, but its
log density contributes nothing to an ELBO, and the Delta guide's log density is 0 at its own value, so Pyro's
``Trace_ELBO`` of this pair is exactly the reconstruction cross-entropy
:math:`-\\sum_i [x_i \\log p_i + (1 - x_i) \\log(1 - p_i)]` (tested). The KL term is replaced by a game on the
aggregated posterior :math:`q(z) = \\int \\delta(z - \\mathrm{Enc}(x))\\, p_d(x)\\, dx`:

.. math::

    \\mathcal{L}^{D} = -\\log D(z_p) - \\log(1 - D(\\mathrm{Enc}(x))), \\ z_p \\sim \\mathcal{N}(0, I); \\qquad
    \\mathcal{L}^{G} = -\\log D(\\mathrm{Enc}(x))

(non-saturating). Each batch makes three updates, each with its own Adam optimizer and gradients computed only
for the parameters it updates: (1) reconstruction (encoder + decoder) on ``Trace_ELBO``; (2) regularization,
discriminator (prior samples are "real", codes "fake"; codes detached); (3) regularization, generator (the
encoder fools the discriminator).

References:

1. A. Makhzani, J. Shlens, N. Jaitly, I. Goodfellow, B. Frey (2015), *Adversarial autoencoders*, arXiv:1511.05644.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.conventions import DATA_PLATE
from ppl_vae.nn import BernoulliDecoder, mlp

__all__ = ["AdversarialAutoencoder", "ADAM_BETAS"]

ADAM_BETAS = (0.5, 0.999)


class AdversarialAutoencoder(BernoulliDecoder, nn.Module):
    """Model ``model(x, idx=None)`` (also its ``forward``) and guide ``guide(x, idx=None)`` of an AAE, and its
    latent discriminator.

    Sample sites, in plate ``data``:

    - ``z``: latent, ``Normal(0, 1).to_event(1).mask(False)`` (``event_dim=1``, shape ``(N, z_dim)``), in the
      guide ``Delta(encoder(x)).to_event(1)``;
    - ``x``: observed, ``Bernoulli(logits=decoder(z))`` with ``event_dim=1``, shape ``(N, x_dim)``.

    :param int x_dim: pixels per image (784).
    :param int z_dim: code size.
    :param tuple hidden: encoder and decoder hidden sizes.
    :param tuple dis_hidden: latent discriminator sizes.
    :param str activation: ``"elu"``.

    Example::

        >>> import torch
        >>> from ppl_vae.data import ImageSet, make_loader
        >>> from ppl_vae.models import AdversarialAutoencoder
        >>> from ppl_vae.training import train_aae
        >>> aae = AdversarialAutoencoder(z_dim=8)
        >>> images = ImageSet(torch.rand(40, 784).bernoulli(), torch.zeros(40, dtype=torch.long))
        >>> history = train_aae(aae, make_loader(images, 20), epochs=1, lr=1e-3)
        >>> aae.sample(16).shape             # decoded draws from N(0, I)
        torch.Size([16, 784])
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 8, hidden: tuple[int, ...] = (256, 256),
                 dis_hidden: tuple[int, ...] = (256, 256), activation: str = "elu"):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.encoder = mlp(x_dim, tuple(hidden), z_dim, activation)
        self.decoder = mlp(z_dim, tuple(reversed(hidden)), x_dim, activation)
        self.discriminator = mlp(z_dim, tuple(dis_hidden), 1, activation)

    def _check(self, x: torch.Tensor) -> None:
        self.check_data(x)

    def model(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None,
              num_points: int | None = None) -> torch.Tensor:
        """The model: ``z`` from the prior (masked out of the ELBO), ``x`` observed or generated.

        :param x: ``(N, x_dim)`` in [0, 1], or ``None`` to generate ``num_points`` images.
        :param idx: ``(N,)`` indices (unused).
        :param int num_points: how many images to generate when ``x`` is ``None``.
        :returns: logits ``(..., N, x_dim)``.
        :raises ValueError: if neither ``x`` nor ``num_points`` is given.
        :raises DataError: for data the likelihood cannot score (:meth:`~ppl_vae.nn.BernoulliDecoder.check_data`).
        """
        if x is not None:
            self._check(x)
        elif num_points is None:
            raise ValueError("Expected x or num_points but got neither")
        n = x.shape[0] if x is not None else num_points
        p = next(self.decoder.parameters())
        loc = p.new_zeros(()).expand(n, self.z_dim)
        with pyro.plate(DATA_PLATE, n, dim=-1):
            # the prior generates, but is masked out of the ELBO: the adversarial game replaces the KL term
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1).mask(False))
            logits = self.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
        return logits

    forward = model

    def guide(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The deterministic encoder as a guide: site ``z`` is ``Delta(encoder(x)).to_event(1)``, ``(N, z_dim)``."""
        self._check(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return pyro.sample("z", dist.Delta(self.encoder(x)).to_event(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, z_dim)`` for ``x (N, x_dim)``."""
        return self.encoder(x)




