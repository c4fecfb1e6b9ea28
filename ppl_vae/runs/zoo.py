"""The model zoo behind ``ppl-vae train --model ae|vae|vqvae|vaegan|aae``: how each model, its guide and its
training objective are built, and the trainer of the two adversarial models.

- ``vae``: :class:`~ppl_vae.models.BernoulliVAE` with the ``--guide`` of the run; Pyro's ELBO, optionally with a β
  weight or a KL warm-up schedule (:class:`ppl_vae.objectives.annealing.AnnealedELBO`) or free bits
  (:class:`ppl_vae.objectives.free_bits.FreeBitsELBO`);
- ``ae``: :class:`~ppl_vae.models.Autoencoder` with a Delta encoder: Pyro's ``Trace_ELBO`` is then the reconstruction loss;
- ``vqvae``: :class:`~ppl_vae.models.VQVAE` (no latent site; its codebook and commitment losses are a ``pyro.factor``);
- ``vaegan``, ``aae``: three players each, trained by :class:`~ppl_vae.training.AdversarialTrainer` with the models'
  own steps; ``vqvae`` by :class:`~ppl_vae.training.VQVAETrainer` (the codebook at its own learning rate, as
  :func:`~ppl_vae.training.train_vqvae`).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import VAEGAN, VQVAE, AdversarialAutoencoder, Autoencoder, BernoulliVAE, DeltaEncoder
from ppl_vae.objectives import AnnealedELBO, cyclical, linear_warmup
from ppl_vae.training import AdversarialTrainer, Trainer, VQVAETrainer

__all__ = ["ZOO", "ADVERSARIAL", "build_zoo_model", "build_zoo_guide", "build_zoo_objective", "build_trainer",
           "EmptyGuide", "MethodGuide"]

ZOO = ("vae", "ae", "vqvae", "vaegan", "aae")
ADVERSARIAL = ("vaegan", "aae")


class EmptyGuide(nn.Module):
    """The guide of a model without latent sites (the VQ-VAE): samples nothing."""

    def forward(self, x, idx=None):
        return None


class MethodGuide(nn.Module):
    """A guide that is a method of the model's module (the AAE's Delta encoder); holds no parameters itself."""

    def __init__(self, owner: nn.Module, method: str = "guide"):
        super().__init__()
        self._owner, self._method = [owner], method  # a list: not registered as a submodule

    def forward(self, x, idx=None):
        return getattr(self._owner[0], self._method)(x, idx)


def build_zoo_model(config, x_dim: int) -> nn.Module:
    hidden = tuple(config.hidden)
    if config.model == "vae":
        return BernoulliVAE(x_dim, config.z_dim, hidden, config.activation)
    if config.model == "ae":
        return Autoencoder(x_dim, config.z_dim, hidden, config.activation)
    if config.model == "vqvae":
        return VQVAE(x_dim, hidden=tuple(reversed(hidden)), activation=config.activation)
    if config.model == "vaegan":
        return VAEGAN(x_dim, config.z_dim, hidden, dis_hidden=hidden, activation=config.activation)
    return AdversarialAutoencoder(x_dim, config.z_dim, hidden, dis_hidden=hidden, activation=config.activation)


def build_zoo_guide(config, model, x_example: torch.Tensor) -> nn.Module:
    hidden = tuple(reversed(config.hidden))
    if config.model == "ae":
        return DeltaEncoder(x_example.shape[1], config.z_dim, hidden, config.activation)
    if config.model == "vqvae":
        return EmptyGuide()
    if config.model == "vaegan":
        return AmortizedNormal.for_model(model, x_example, hidden=hidden, activation=config.activation)
    return MethodGuide(model)


def build_zoo_objective(config, base):
    """Wrap the Pyro ELBO ``base`` (a :class:`FreeBitsELBO` when ``free_bits > 0``) with the run's β schedule:
    warm-up, cyclical or constant β (VAE only). The configuration has already refused what does not compose."""
    if config.warmup_steps > 0:
        return AnnealedELBO(base, functools.partial(linear_warmup, warmup_steps=config.warmup_steps, beta_max=config.beta))
    if config.cycle_steps > 0:
        return AnnealedELBO(base, functools.partial(cyclical, cycle_steps=config.cycle_steps, beta_max=config.beta))
    if config.beta != 1.0:
        return AnnealedELBO(base, config.beta)
    return base


def build_trainer(config, model, guide, objective):
    """The trainer of the run: :class:`~ppl_vae.training.AdversarialTrainer` (VAE-GAN, AAE),
    :class:`~ppl_vae.training.VQVAETrainer` (VQ-VAE: one code path with :func:`~ppl_vae.training.train_vqvae`) or
    :class:`~ppl_vae.training.Trainer` with ``objective`` (VAE, AE)."""
    if config.model in ADVERSARIAL:
        return AdversarialTrainer(config.model, model, guide, config.lr, config.gamma)
    if config.model == "vqvae":
        return VQVAETrainer(model, config.lr)
    return Trainer(model, guide, objective, config.lr)
