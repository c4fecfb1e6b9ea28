"""Training the adversarial autoencoder (Makhzani et al. 2016): reconstruction, latent discriminator and
regularization phases, each with its own Adam optimizer. The model is :class:`ppl_vae.models.AdversarialAutoencoder`.

References:

1. A. Makhzani, J. Shlens, N. Jaitly, I. Goodfellow, B. Frey (2016), *Adversarial Autoencoders*, ICLR workshop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from pyro.infer import Trace_ELBO
from torch.nn.functional import softplus

from ppl_vae.models.aae import ADAM_BETAS, AdversarialAutoencoder

from .vaegan import update

__all__ = ["AAEOptimizers", "reconstruction_step", "latent_discriminator_step", "regularization_step", "aae_step",
           "train_aae"]


@dataclass(frozen=True)
class AAEOptimizers:
    """Adam optimizers of the three phases: ``autoencoder`` (encoder + decoder), ``discriminator``, ``generator``
    (the encoder, with its own Adam state)."""

    autoencoder: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer
    generator: torch.optim.Optimizer

    @classmethod
    def create(cls, aae: AdversarialAutoencoder, lr: float = 1e-3) -> AAEOptimizers:
        """The Adam optimizers of the autoencoder and of the latent discriminator, learning rate ``lr``.

        :raises ValueError: if ``lr <= 0``.
        """
        if lr <= 0:
            raise ValueError(f"Expected lr > 0 but got {lr}")
        autoencoder = [*aae.encoder.parameters(), *aae.decoder.parameters()]
        return cls(torch.optim.Adam(autoencoder, lr=lr, betas=ADAM_BETAS),
                   torch.optim.Adam(aae.discriminator.parameters(), lr=lr, betas=ADAM_BETAS),
                   torch.optim.Adam(aae.encoder.parameters(), lr=lr, betas=ADAM_BETAS))


def reconstruction_step(aae: AdversarialAutoencoder, x: torch.Tensor, optimizer: torch.optim.Optimizer,
                        idx: torch.Tensor | None = None) -> float:
    """Update encoder and decoder on ``-ELBO`` = the reconstruction cross-entropy; returns it, nats per point."""
    loss = Trace_ELBO().differentiable_loss(aae.model, aae.guide, x, idx) / x.shape[0]
    update(loss, optimizer, "The reconstruction loss")
    return loss.item()


def latent_discriminator_step(aae: AdversarialAutoencoder, x: torch.Tensor,
                              optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Update the discriminator: prior draws ``z_p ~ N(0, I)`` are real, detached codes ``Enc(x)`` fake.
    Returns ``disc_loss`` per point and ``disc_accuracy`` (mean of the two classes' accuracies)."""
    codes = aae.encode(x)
    d_fake = aae.discriminator(codes).squeeze(-1)
    d_real = aae.discriminator(torch.randn_like(codes)).squeeze(-1)
    loss = softplus(-d_real).mean() + softplus(d_fake).mean()
    update(loss, optimizer, "The latent discriminator's loss")
    accuracy = ((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2
    return {"disc_loss": loss.item(), "disc_accuracy": accuracy.item()}


def regularization_step(aae: AdversarialAutoencoder, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
    """Update the encoder to fool the discriminator, ``-log D(Enc(x))``; returns it per point."""
    loss = softplus(-aae.discriminator(aae.encoder(x)).squeeze(-1)).mean()
    update(loss, optimizer, "The regularization (generator) loss")
    return loss.item()


def aae_step(aae: AdversarialAutoencoder, x: torch.Tensor, optimizers: AAEOptimizers,
             idx: torch.Tensor | None = None) -> dict[str, float]:
    """The three updates of one batch ``x (B, x_dim)``: reconstruction, discriminator, regularization."""
    out = {"reconstruction": reconstruction_step(aae, x, optimizers.autoencoder, idx)}
    out.update(latent_discriminator_step(aae, x, optimizers.discriminator))
    out["gen_loss"] = regularization_step(aae, x, optimizers.generator)
    return out


def train_aae(aae: AdversarialAutoencoder, loader, epochs: int, lr: float = 1e-3,
              optimizers: AAEOptimizers | None = None) -> dict[str, list]:
    """Train an AAE for ``epochs`` passes over ``loader`` of ``(x, y, idx)`` batches.

    :param optimizers: to continue a training; by default new Adam optimizers with ``lr``.
    :returns: per-epoch history, batch means: ``epoch``, ``reconstruction`` (nats per point), ``disc_loss``,
        ``disc_accuracy``, ``gen_loss``, ``seconds``.
    :raises ValueError: if ``epochs < 1``.
    """
    if epochs < 1:
        raise ValueError(f"Expected epochs >= 1 but got {epochs}")
    optimizers = optimizers or AAEOptimizers.create(aae, lr)
    keys = ("reconstruction", "disc_loss", "disc_accuracy", "gen_loss")
    history: dict[str, list] = {"epoch": [], **{k: [] for k in keys}, "seconds": []}
    for epoch in range(1, epochs + 1):
        start, sums, count = time.perf_counter(), dict.fromkeys(keys, 0.0), 0
        for x, _, idx in loader:
            for k, v in aae_step(aae, x, optimizers, idx).items():
                sums[k] += v
            count += 1
        history["epoch"].append(epoch)
        for k in keys:
            history[k].append(sums[k] / max(count, 1))
        history["seconds"].append(time.perf_counter() - start)
    return history
