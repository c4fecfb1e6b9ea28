"""Training the VAE-GAN (Larsen et al. 2016): three players, each with its own Adam optimizer.

Each batch makes three updates, each with gradients computed only for its own parameters (``backward(inputs=...)``):

1. encoder (the guide): :math:`-\\mathrm{ELBO}` (Pyro's ``Trace_ELBO().differentiable_loss``);
2. decoder: :math:`\\gamma\\,\\mathcal{L}_\\mathrm{llike}^{\\mathrm{Dis}_l} + \\mathcal{L}_\\mathrm{GAN}^{G}`;
3. discriminator: :math:`\\mathcal{L}_\\mathrm{GAN}^{D}`, on detached :math:`\\tilde x` and :math:`x_p`.

The model and its losses are :class:`ppl_vae.models.VAEGAN`.

References:

1. A. B. L. Larsen, S. K. Sønderby, H. Larochelle, O. Winther (2016), *Autoencoding beyond pixels using a learned
   similarity metric*, ICML.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, softplus

from ppl_vae.models.vaegan import ADAM_BETAS, VAEGAN

from .guards import guarded_update

__all__ = ["VAEGANOptimizers", "encoder_step", "decoder_step", "discriminator_step", "vaegan_step", "train_vaegan",
           "update"]


@dataclass(frozen=True)
class VAEGANOptimizers:
    """One Adam optimizer per player: ``encoder`` (the guide), ``decoder``, ``discriminator``."""

    encoder: torch.optim.Optimizer
    decoder: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer

    @classmethod
    def create(cls, vaegan: VAEGAN, guide: nn.Module, lr: float = 1e-3) -> VAEGANOptimizers:
        """One Adam optimizer per player (encoder, decoder, discriminator), each with learning rate ``lr``.

        :raises ValueError: if ``lr <= 0``.
        """
        if lr <= 0:
            raise ValueError(f"Expected lr > 0 but got {lr}")

        def adam(module):
            return torch.optim.Adam(module.parameters(), lr=lr, betas=ADAM_BETAS)

        return cls(adam(guide), adam(vaegan.decoder), adam(vaegan.discriminator))


def update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, what: str = "The loss") -> None:
    """Gradients of ``loss`` for this optimizer's parameters only (no other ``.grad`` is touched), then a step —
    unless the loss or a gradient is not finite (:func:`~ppl_vae.training.guards.guarded_update`).

    :raises TrainingDiverged: naming ``what`` diverged; nothing of this optimizer's parameters is updated.
    """
    guarded_update(loss, optimizer, only_own_gradients=True, what=what)


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
    update(loss, optimizer, "The encoder's loss (-ELBO)")
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
    update(gamma * feature_nll + gen_loss, optimizer, "The decoder's loss")
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
    update(loss, optimizer, "The discriminator's loss")
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
    :raises ValueError: if ``epochs < 1`` or ``gamma < 0``.
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
