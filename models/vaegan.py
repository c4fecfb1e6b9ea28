"""VAE-GAN: a VAE whose reconstruction likelihood lives in a discriminator's feature space (Larsen et al. 2016).

The generative model is a Pyro model, as every model of the library: a prior, a decoder, a likelihood.

.. math::

    z_n \\sim \\mathcal{N}(0, I_d), \\qquad \\tilde x_n = \\sigma(\\mathrm{Dec}(z_n)), \\qquad
    \\mathrm{Dis}_l(x_n) \\sim \\mathcal{N}(\\mathrm{Dis}_l(\\tilde x_n), I)

where :math:`\\mathrm{Dis}_l` is the :math:`l`-th hidden layer of a GAN discriminator: the data's features are
observed under a unit Gaussian centred at the reconstruction's features (the paper's
:math:`\\mathcal{L}_\\mathrm{llike}^{\\mathrm{Dis}_l}`). With an amortized Gaussian guide, Pyro's
``Trace_ELBO`` of this pair is the paper's :math:`-(\\mathcal{L}_\\mathrm{prior} + \\mathcal{L}_\\mathrm{llike})`.

The adversarial part is added on top, not folded into the model: a discriminator
:math:`D = \\sigma(\\mathrm{Dis}(\\cdot))` separates data :math:`x` from reconstructions :math:`\\tilde x` and from
prior samples :math:`x_p = \\sigma(\\mathrm{Dec}(z_p))`, :math:`z_p \\sim \\mathcal{N}(0, I)`:

.. math::

    \\mathcal{L}_\\mathrm{GAN}^{D} = -\\log D(x) - \\log(1 - D(\\tilde x)) - \\log(1 - D(x_p)), \\qquad
    \\mathcal{L}_\\mathrm{GAN}^{G} = -\\log D(\\tilde x) - \\log D(x_p)

(the non-saturating generator loss of Goodfellow et al. 2014). Each batch makes three updates, each player with
its own Adam optimizer and gradients computed only for its own parameters (``backward(inputs=...)``):

1. encoder (the guide): :math:`-\\mathrm{ELBO}` (Pyro's ``Trace_ELBO().differentiable_loss``);
2. decoder: :math:`\\gamma\\,\\mathcal{L}_\\mathrm{llike}^{\\mathrm{Dis}_l} + \\mathcal{L}_\\mathrm{GAN}^{G}`;
3. discriminator: :math:`\\mathcal{L}_\\mathrm{GAN}^{D}`, on detached :math:`\\tilde x` and :math:`x_p`.

References:

1. A. B. L. Larsen, S. K. Sønderby, H. Larochelle, O. Winther (2016), *Autoencoding beyond pixels using a learned
   similarity metric*, ICML.
2. I. Goodfellow et al. (2014), *Generative adversarial nets*, NeurIPS.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.conventions import DATA_PLATE
from ppl_vae.nn import ACTIVATIONS, BernoulliDecoder, mlp

__all__ = ["Discriminator", "VAEGAN", "ADAM_BETAS"]

ADAM_BETAS = (0.5, 0.999)  # the usual GAN setting (Radford et al. 2016); also used by Larsen et al.'s code


class Discriminator(nn.Module):
    """An MLP ``x (..., x_dim) -> hidden -> 1`` logit whose hidden layers are exposed as features ``Dis_l(x)``.

    :param int x_dim: input size (784).
    :param tuple hidden: hidden layer sizes.
    :param int feature_layer: which hidden layer gives ``Dis_l`` (Python index into ``hidden``; ``-1``: the last).
    :param str activation: ``"elu"``, ``"relu"``, ``"tanh"``, ``"softplus"``.
    :raises ValueError: for a discriminator without hidden layers, a ``feature_layer`` out of range or an unknown activation.
    """

    def __init__(self, x_dim: int = 784, hidden: tuple[int, ...] = (256, 256), feature_layer: int = -1,
                 activation: str = "elu"):
        super().__init__()
        hidden = tuple(hidden)
        if not hidden:
            raise ValueError(f"Expected at least one hidden layer in the discriminator but got hidden={hidden}")
        if not -len(hidden) <= feature_layer < len(hidden):
            raise ValueError(f"Expected feature_layer in [{-len(hidden)}, {len(hidden) - 1}] but got {feature_layer}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Expected activation in {sorted(ACTIVATIONS)} but got {activation!r}")
        dims = (x_dim, *hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(a, b), ACTIVATIONS[activation]())
                                    for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(hidden[-1], 1)
        self.feature_layer = feature_layer % len(hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``Dis_l(x)``: ``(..., hidden[l])`` for ``x (..., x_dim)``."""
        for block in self.blocks[: self.feature_layer + 1]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(...,)`` of "``x`` is data" for ``x (..., x_dim)``."""
        for block in self.blocks:
            x = block(x)
        return self.head(x).squeeze(-1)


class VAEGAN(BernoulliDecoder, nn.Module):
    """The VAE-GAN generative model as a Pyro model, ``model(x, idx=None)`` (also its ``forward``).

    Sample sites, in plate ``data``:

    - ``z``: latent, ``Normal(0, 1)`` with ``event_dim=1``, shape ``(N, z_dim)``;
    - ``features``: observed, ``Normal(Dis_l(x_tilde), 1)`` with ``event_dim=1``, value ``Dis_l(x)``,
      shape ``(N, hidden[l])``.

    Its guide is any encoder of ``z``, e.g. ``guides.AmortizedNormal(x_dim, {"z": z_dim})``.

    :param int x_dim: pixels per image (784).
    :param int z_dim: latent size.
    :param tuple hidden: decoder hidden sizes.
    :param tuple dis_hidden: discriminator hidden sizes.
    :param int feature_layer: the discriminator layer ``l`` of the likelihood (Python index into ``dis_hidden``).
        Default ``0``, the first hidden layer: on binarized Fashion-MNIST with MLPs, 5 epochs gave a pixel
        reconstruction cross-entropy of 352 nats per image with ``l = 0`` against 400 with the last of two layers
        (one seed, ``z_dim=16``, ``gamma=1``; Larsen et al. use the third of four convolutional layers on CelebA).
    :param str activation: ``"elu"``.

    Example::

        >>> import torch
        >>> from ppl_vae.data import ImageSet, make_loader
        >>> from ppl_vae.guides import AmortizedNormal
        >>> from ppl_vae.models import VAEGAN
        >>> from ppl_vae.training import train_vaegan
        >>> vaegan = VAEGAN(z_dim=16)
        >>> guide = AmortizedNormal(784, {"z": 16})
        >>> images = ImageSet(torch.rand(40, 784).bernoulli(), torch.zeros(40, dtype=torch.long))
        >>> history = train_vaegan(vaegan, guide, make_loader(images, 20), epochs=1, lr=1e-3)
        >>> vaegan.sample(16).shape          # binary images from the prior
        torch.Size([16, 784])
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 16, hidden: tuple[int, ...] = (256, 256),
                 dis_hidden: tuple[int, ...] = (256, 256), feature_layer: int = 0, activation: str = "elu"):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.decoder = mlp(z_dim, tuple(hidden), x_dim, activation)
        self.discriminator = Discriminator(x_dim, dis_hidden, feature_layer, activation)

    def model(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The model: ``z`` from the prior, the data's discriminator features observed.

        :param x: ``(N, x_dim)`` in [0, 1].
        :param idx: ``(N,)`` indices (unused).
        :returns: the reconstructions' pixel probabilities ``x_tilde (..., N, x_dim)``.
        :raises ValueError: if ``x`` is ``None`` (the likelihood observes the data's features).
        :raises DataError: for data the likelihood cannot score (:meth:`~ppl_vae.nn.BernoulliDecoder.check_data`).
        """
        if x is None:
            raise ValueError(f"Expected x of shape (N, {self.x_dim}), got None: the likelihood observes the data's features")
        self.check_data(x)
        n = x.shape[0]
        loc = x.new_zeros(()).expand(n, self.z_dim)
        with pyro.plate(DATA_PLATE, n, dim=-1):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            x_tilde = torch.sigmoid(self.decoder(z))
            # the data's features are observations: no gradient flows through them
            observed = self.discriminator.features(x).detach()
            pyro.sample("features", dist.Normal(self.discriminator.features(x_tilde), 1.0).to_event(1), obs=observed)
        return x_tilde

    forward = model

    def feature_nll(self, x: torch.Tensor, x_tilde: torch.Tensor) -> torch.Tensor:
        """``-log N(Dis_l(x); Dis_l(x_tilde), I)``: ``(N,)`` nats for ``x, x_tilde (N, x_dim)`` (the model's
        ``features`` site, with gradients to ``x_tilde`` only)."""
        d = self.discriminator
        return -dist.Normal(d.features(x_tilde), 1.0).to_event(1).log_prob(d.features(x).detach())




