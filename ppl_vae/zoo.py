"""The model zoo behind ``ppl-vae train --model ae|vae|vqvae|vaegan|aae``: how each model, its guide and its
training objective are built, and the trainer of the two adversarial models.

- ``vae``: :class:`models.BernoulliVAE` with the ``--guide`` of the run; Pyro's ELBO, optionally with a β
  weight or a KL warm-up schedule (:class:`ppl_vae.annealing.AnnealedELBO`) or free bits
  (:class:`ppl_vae.free_bits.FreeBitsELBO`);
- ``ae``: :class:`models.Autoencoder` with a Delta encoder: Pyro's ``Trace_ELBO`` is then the reconstruction loss;
- ``vqvae``: :class:`models.VQVAE` (no latent site; its codebook and commitment losses are a ``pyro.factor``);
- ``vaegan``, ``aae``: three players each, trained by :class:`AdversarialTrainer` with the models' own steps.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["ZOO", "build_zoo_model", "build_zoo_guide", "build_zoo_objective", "AdversarialTrainer", "EmptyGuide",
           "MethodGuide"]

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
    from models import VAEGAN, VQVAE, AdversarialAutoencoder, Autoencoder, BernoulliVAE

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
    from guides import AmortizedNormal
    from models import DeltaEncoder

    hidden = tuple(reversed(config.hidden))
    if config.model == "ae":
        return DeltaEncoder(x_example.shape[1], config.z_dim, hidden, config.activation)
    if config.model == "vqvae":
        return EmptyGuide()
    if config.model == "vaegan":
        return AmortizedNormal.for_model(model, x_example, hidden=hidden, activation=config.activation)
    return MethodGuide(model)


def build_zoo_objective(config, base):
    """Wrap the Pyro ELBO ``base`` with the run's β / warm-up / free-bits settings (VAE only)."""
    from ppl_vae.annealing import AnnealedELBO, cyclical, linear_warmup
    from ppl_vae.free_bits import FreeBitsELBO

    if config.free_bits > 0:
        return FreeBitsELBO(config.free_bits, num_particles=config.k)
    if config.warmup_steps > 0:
        return AnnealedELBO(base, functools.partial(linear_warmup, warmup_steps=config.warmup_steps, beta_max=config.beta))
    if config.cycle_steps > 0:
        return AnnealedELBO(base, functools.partial(cyclical, cycle_steps=config.cycle_steps, beta_max=config.beta))
    if config.beta != 1.0:
        return AnnealedELBO(base, config.beta)
    return base


class AdversarialTrainer:
    """The :class:`ppl_vae.train.Trainer` interface (``train_epoch``, ``state_dict``, ``history``) over the
    three-player updates of the VAE-GAN (encoder, decoder, discriminator) or the AAE (autoencoder, latent
    discriminator, regularization). ``train_epoch`` returns minus the mean reconstruction loss (nats per point)."""

    def __init__(self, kind: str, model, guide, lr: float, gamma: float = 1.0):
        from models.aae import AAEOptimizers
        from models.vaegan import VAEGANOptimizers

        self.kind, self.model, self.guide, self.gamma = kind, model, guide, gamma
        if kind == "vaegan":
            self.optimizers = VAEGANOptimizers.create(model, guide, lr)
        else:
            self.optimizers = AAEOptimizers.create(model, lr)
        self.history: dict[str, list] = {"epoch": [], "train_elbo": [], "valid_elbo": [], "seconds": []}
        self.steps = 0

    def _optimizer_list(self):
        return [getattr(self.optimizers, f.name) for f in self.optimizers.__dataclass_fields__.values()]

    def train_epoch(self, loader, progress=None) -> float:
        from models.aae import aae_step
        from models.vaegan import vaegan_step

        total, count = 0.0, 0
        for x, _, idx in loader:
            if self.kind == "vaegan":
                out = vaegan_step(self.model, self.guide, x, self.optimizers, self.gamma, idx)
            else:
                out = aae_step(self.model, x, self.optimizers, idx)
            if not all(v == v and abs(v) != float("inf") for v in out.values()):
                from ppl_vae.train import TrainingDiverged

                raise TrainingDiverged(f"A loss became NaN or infinite at step {self.steps + 1}: {out}")
            total -= out["reconstruction"] * x.shape[0]
            count += x.shape[0]
            self.steps += 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(recon=f"{-total / count:.2f}")
        return total / max(count, 1)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self._optimizer_list()], "steps": self.steps}

    def load_state_dict(self, state: dict, x=None, idx=None) -> None:
        for o, s in zip(self._optimizer_list(), state["optimizers"]):
            o.load_state_dict(s)
        self.steps = state["steps"]
