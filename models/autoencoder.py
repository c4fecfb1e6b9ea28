"""The deterministic autoencoder as a Pyro model/guide pair: the baseline with a reconstruction term only.

.. math:: z_n = g_\\phi(x_n), \\qquad x_n \\sim \\mathrm{Bernoulli}(\\mathrm{logits}=f_\\theta(z_n))

The model's latent has an improper flat "prior" (:math:`\\log p(z) = 0`) and the guide is a
point mass (``Delta``, :math:`\\log q(z|x) = 0` at its sample), so every Pyro ELBO reduces to the reconstruction
term: training with ``Trace_ELBO`` minimizes the summed binary cross-entropy
:math:`-\\sum_n \\log p_\\theta(x_n | g_\\phi(x_n))` — no KL term, no noise. Compare with
:class:`~ppl_vae.models.vae.BernoulliVAE` and :class:`~ppl_vae.guides.AmortizedNormal`, which add both.

The latent code is not a density model: the pair has no prior to sample from and its "ELBO" is not a bound on
:math:`\\log p(x)` (the estimators in :mod:`ppl_vae.estimators` do not apply).
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.conventions import DATA_PLATE
from ppl_vae.nn import BernoulliDecoder, mlp

__all__ = ["Autoencoder", "DeltaEncoder", "reconstruct"]


class Autoencoder(BernoulliDecoder, nn.Module):
    """The decoder half as a Pyro model: ``model(x, idx=None)``.

    ``sample(num)`` decodes random codes ``z ~ N(0, I)``: an autoencoder puts no prior on its codes, so nothing
    makes these images look like data — the lecture's reason to move to the VAE.

    Sample sites:

    - ``z``: latent, flat: ``Normal(0, 1).expand([z_dim]).to_event(1).mask(False)``, whose ``log_prob`` is 0
      everywhere (Pyro's recipe for an improper uniform density that can still be sampled, so the library can
      trace the model without a guide: ``ImproperUniform`` cannot be sampled), ``event_dim=1``, shape
      ``(N, z_dim)``, in plate ``data``;
    - ``x``: observed, ``Bernoulli(logits=decoder(z))`` with ``event_dim=1``, shape ``(N, x_dim)``.

    :param int x_dim: pixels per image (784).
    :param int z_dim: code size.
    :param tuple hidden: decoder hidden sizes.
    :param str activation: ``"elu"`` (default), ``"relu"``, ...

    Example::

        >>> import pyro, torch
        >>> from ppl_vae.models import Autoencoder, DeltaEncoder
        >>> from ppl_vae.training import Trainer
        >>> model, guide = Autoencoder(z_dim=2), DeltaEncoder(z_dim=2)
        >>> trainer = Trainer(model, guide, pyro.infer.Trace_ELBO(), lr=1e-3)   # loss = binary cross-entropy
        >>> x = torch.rand(8, 784).bernoulli()
        >>> trainer.step(x) > 0                                               # nats per image
        True
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 2, hidden: tuple[int, ...] = (200, 200), activation: str = "elu"):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.decoder = mlp(z_dim, tuple(hidden), x_dim, activation)

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The model: a flat ``z``, ``x`` observed.

        :param x: ``(N, x_dim)`` in [0, 1].
        :param idx: ``(N,)`` indices (unused).
        :returns: logits ``(..., N, x_dim)``.
        :raises ValueError: if ``x`` is ``None`` (an autoencoder has no prior to sample from).
        :raises DataError: for data the likelihood cannot score (:meth:`~ppl_vae.nn.BernoulliDecoder.check_data`).
        """
        if x is None:
            raise ValueError("Expected data x of shape (N, x_dim), got None: an autoencoder has no prior to sample from")
        self.check_data(x)
        p = next(self.decoder.parameters())
        # log p(z) = 0 everywhere (an improper flat prior); the Normal only lets the model be traced without a guide
        flat_prior = dist.Normal(p.new_zeros(()), 1.0).expand([self.z_dim]).to_event(1).mask(False)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            z = pyro.sample("z", flat_prior)
            logits = self.decoder(z)
            # validate_args=False: continuous intensities in [0, 1] are scored as cross-entropy, as in BernoulliVAE
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
        return logits


class DeltaEncoder(nn.Module):
    """The encoder half as a Pyro guide: ``guide(x, idx=None)`` samples ``z ~ Delta(encoder(x)).to_event(1)``.

    Site ``z``: shape ``(N, z_dim)``, ``event_dim=1``, plate ``data``; a point mass, reparameterized (the
    gradient of the reconstruction reaches the encoder through ``z``).

    :param int x_dim: input size.
    :param int z_dim: code size.
    :param tuple hidden: encoder hidden sizes.
    :param str site: the latent site's name (``"z"``).
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 2, hidden: tuple[int, ...] = (200, 200), activation: str = "elu",
                 site: str = "z"):
        super().__init__()
        self.x_dim, self.z_dim, self.site = x_dim, z_dim, site
        self.encoder = mlp(x_dim, tuple(hidden), z_dim, activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``(N, z_dim)`` of ``x (N, x_dim)`` (differentiable)."""
        return self.encoder(x.reshape(x.shape[0], -1))

    def distributions(self, x: torch.Tensor) -> dict[str, dist.Distribution]:
        """``{site: Delta(code (N, z_dim)).to_event(1)}``, the interface of :class:`~ppl_vae.guides.AmortizedNormal`."""
        return {self.site: dist.Delta(self.encode(x)).to_event(1)}

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        dists = self.distributions(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return {name: pyro.sample(name, d) for name, d in dists.items()}


@torch.no_grad()
def reconstruct(model: Autoencoder, guide: DeltaEncoder, x: torch.Tensor) -> torch.Tensor:
    """Reconstructions ``(N, x_dim)``: the decoder's pixel probabilities at the code of ``x (N, x_dim)``."""
    return model.decode(guide.encode(x))
