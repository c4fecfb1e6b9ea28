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

import time
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, softplus

from ppl_vae.conventions import DATA_PLATE
from ppl_vae.nn import ACTIVATIONS, BernoulliDecoder, mlp

__all__ = ["Discriminator", "VAEGAN", "VAEGANOptimizers", "encoder_step", "decoder_step", "discriminator_step",
           "vaegan_step", "train_vaegan"]

ADAM_BETAS = (0.5, 0.999)  # the usual GAN setting (Radford et al. 2016); also used by Larsen et al.'s code


class Discriminator(nn.Module):
    """An MLP ``x (..., x_dim) -> hidden -> 1`` logit whose hidden layers are exposed as features ``Dis_l(x)``.

    :param int x_dim: input size (784). :param tuple hidden: hidden layer sizes.
    :param int feature_layer: which hidden layer gives ``Dis_l`` (Python index into ``hidden``; ``-1``: the last).
    :param str activation: ``"elu"``, ``"relu"``, ``"tanh"``, ``"softplus"``.
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

    :param int x_dim: pixels per image (784). :param int z_dim: latent size.
    :param tuple hidden: decoder hidden sizes. :param tuple dis_hidden: discriminator hidden sizes.
    :param int feature_layer: the discriminator layer ``l`` of the likelihood (Python index into ``dis_hidden``).
        Default ``0``, the first hidden layer: on binarized Fashion-MNIST with MLPs, 5 epochs gave a pixel
        reconstruction cross-entropy of 352 nats per image with ``l = 0`` against 400 with the last of two layers
        (one seed, ``z_dim=16``, ``gamma=1``; Larsen et al. use the third of four convolutional layers on CelebA).
    :param str activation: ``"elu"``.

    Example::

        vaegan = VAEGAN(z_dim=16)
        guide = AmortizedNormal(784, {"z": 16})
        history = train_vaegan(vaegan, guide, loader, epochs=5, lr=1e-3)
        x = vaegan.sample(16)          # (16, 784) binary images from the prior
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 16, hidden: tuple[int, ...] = (256, 256),
                 dis_hidden: tuple[int, ...] = (256, 256), feature_layer: int = 0, activation: str = "elu"):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.decoder = mlp(z_dim, tuple(hidden), x_dim, activation)
        self.discriminator = Discriminator(x_dim, dis_hidden, feature_layer, activation)

    def model(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """:param x: ``(N, x_dim)`` in [0, 1]. :param idx: ``(N,)`` indices (unused).
        :returns: the reconstructions' pixel probabilities ``x_tilde (..., N, x_dim)``."""
        if x is None or x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ValueError(f"Expected x of shape (N, {self.x_dim}) but got "
                             f"{None if x is None else tuple(x.shape)}: the likelihood observes the data's features")
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




@dataclass(frozen=True)
class VAEGANOptimizers:
    """One Adam optimizer per player: ``encoder`` (the guide), ``decoder``, ``discriminator``."""

    encoder: torch.optim.Optimizer
    decoder: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer

    @classmethod
    def create(cls, vaegan: VAEGAN, guide: nn.Module, lr: float = 1e-3) -> "VAEGANOptimizers":
        if lr <= 0:
            raise ValueError(f"Expected lr > 0 but got {lr}")

        def adam(module):
            return torch.optim.Adam(module.parameters(), lr=lr, betas=ADAM_BETAS)

        return cls(adam(guide), adam(vaegan.decoder), adam(vaegan.discriminator))


def _update(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Gradients of ``loss`` for this optimizer's parameters only (no other ``.grad`` is touched), then a step."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    optimizer.step()


@torch.no_grad()
def _guide_sample(guide, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    site = poutine.trace(guide).get_trace(x, idx).nodes.get("z")
    if site is None or site["type"] != "sample":
        raise ValueError("Expected the guide to sample the model's latent site 'z' but it has no such site")
    return site["value"]


def encoder_step(vaegan: VAEGAN, guide, x: torch.Tensor, optimizer: torch.optim.Optimizer,
                 idx: torch.Tensor | None = None) -> float:
    """Update the guide's parameters on ``-ELBO`` (Pyro's ``Trace_ELBO``); returns the ELBO, nats per point."""
    loss = Trace_ELBO().differentiable_loss(vaegan.model, guide, x, idx) / x.shape[0]
    _update(loss, optimizer)
    return -loss.item()


def decoder_step(vaegan: VAEGAN, guide, x: torch.Tensor, optimizer: torch.optim.Optimizer, gamma: float = 1.0,
                 idx: torch.Tensor | None = None) -> dict[str, float]:
    """Update the decoder on ``gamma * feature NLL + non-saturating generator loss``.

    ``z`` is drawn from the guide without gradient (the encoder is not a player of the GAN game), so
    ``grad_Dec`` of the feature NLL equals ``grad_Dec`` of ``-ELBO``: the ELBO's only decoder-dependent term.

    :returns: ``feature_nll`` and ``reconstruction`` (Bernoulli cross-entropy of ``x`` at the decoder's mean,
        a pixel-space monitor) in nats per point, and ``gen_loss`` per point.
    """
    z = _guide_sample(guide, x, idx)
    logits = vaegan.decoder(z)
    x_tilde = torch.sigmoid(logits)
    x_p = torch.sigmoid(vaegan.decoder(torch.randn_like(z)))
    feature_nll = vaegan.feature_nll(x, x_tilde).mean()
    gen_loss = softplus(-vaegan.discriminator(x_tilde)).mean() + softplus(-vaegan.discriminator(x_p)).mean()
    _update(gamma * feature_nll + gen_loss, optimizer)
    with torch.no_grad():
        reconstruction = binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1).mean()
    return {"feature_nll": feature_nll.item(), "gen_loss": gen_loss.item(), "reconstruction": reconstruction.item()}


def discriminator_step(vaegan: VAEGAN, guide, x: torch.Tensor, optimizer: torch.optim.Optimizer,
                       idx: torch.Tensor | None = None) -> dict[str, float]:
    """Update the discriminator on ``-log D(x) - log(1 - D(x_tilde)) - log(1 - D(x_p))``, with ``x_tilde`` and
    ``x_p`` generated without gradient; returns ``disc_loss`` per point and ``disc_accuracy`` over the three sets."""
    with torch.no_grad():
        z = _guide_sample(guide, x, idx)
        x_tilde = vaegan.decode(z)
        x_p = vaegan.decode(torch.randn_like(z))
    d_x, d_tilde, d_p = vaegan.discriminator(x), vaegan.discriminator(x_tilde), vaegan.discriminator(x_p)
    loss = softplus(-d_x).mean() + softplus(d_tilde).mean() + softplus(d_p).mean()
    _update(loss, optimizer)
    accuracy = ((d_x > 0).float().mean() + (d_tilde < 0).float().mean() + (d_p < 0).float().mean()) / 3
    return {"disc_loss": loss.item(), "disc_accuracy": accuracy.item()}


def vaegan_step(vaegan: VAEGAN, guide, x: torch.Tensor, optimizers: VAEGANOptimizers, gamma: float = 1.0,
                idx: torch.Tensor | None = None) -> dict[str, float]:
    """The three updates of one batch ``x (B, x_dim)``, in the order encoder, decoder, discriminator."""
    out = {"elbo": encoder_step(vaegan, guide, x, optimizers.encoder, idx)}
    out.update(decoder_step(vaegan, guide, x, optimizers.decoder, gamma, idx))
    out.update(discriminator_step(vaegan, guide, x, optimizers.discriminator, idx))
    return out


def train_vaegan(vaegan: VAEGAN, guide, loader, epochs: int, lr: float = 1e-3, gamma: float = 1.0,
                 optimizers: VAEGANOptimizers | None = None) -> dict[str, list]:
    """Train a VAE-GAN for ``epochs`` passes over ``loader`` of ``(x, y, idx)`` batches.

    :param float gamma: weight of the feature likelihood against the GAN loss in the decoder's objective
        (Larsen et al.'s :math:`\\gamma`).
    :param optimizers: to continue a training; by default three new Adam optimizers with ``lr``.
    :returns: per-epoch history, batch means: ``epoch``, ``elbo``, ``feature_nll``, ``reconstruction`` (nats per
        point), ``gen_loss``, ``disc_loss``, ``disc_accuracy``, ``seconds``.
    """
    if epochs < 1:
        raise ValueError(f"Expected epochs >= 1 but got {epochs}")
    if gamma < 0:
        raise ValueError(f"Expected gamma >= 0 but got {gamma}")
    optimizers = optimizers or VAEGANOptimizers.create(vaegan, guide, lr)
    keys = ("elbo", "feature_nll", "reconstruction", "gen_loss", "disc_loss", "disc_accuracy")
    history: dict[str, list] = {"epoch": [], **{k: [] for k in keys}, "seconds": []}
    for epoch in range(1, epochs + 1):
        start, sums, count = time.perf_counter(), dict.fromkeys(keys, 0.0), 0
        for x, _, idx in loader:
            for k, v in vaegan_step(vaegan, guide, x, optimizers, gamma, idx).items():
                sums[k] += v
            count += 1
        history["epoch"].append(epoch)
        for k in keys:
            history[k].append(sums[k] / max(count, 1))
        history["seconds"].append(time.perf_counter() - start)
    return history
