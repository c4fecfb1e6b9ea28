"""The trainer of the two adversarial models of the zoo (VAE-GAN, AAE), with the interface of
:class:`ppl_vae.training.Trainer` (``train_epoch``, ``state_dict``, ``history``)."""
from __future__ import annotations

from .aae import AAEOptimizers, aae_step
from .trainer import TrainingDiverged
from .vaegan import VAEGANOptimizers, vaegan_step

__all__ = ["AdversarialTrainer"]


class AdversarialTrainer:
    """The :class:`ppl_vae.training.trainer.Trainer` interface (``train_epoch``, ``state_dict``, ``history``) over the
    three-player updates of the VAE-GAN (encoder, decoder, discriminator) or the AAE (autoencoder, latent
    discriminator, regularization). ``train_epoch`` returns minus the mean reconstruction loss (nats per point)."""

    def __init__(self, kind: str, model, guide, lr: float, gamma: float = 1.0):
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
        """One pass over ``loader`` of ``(x, y, idx)`` batches, each player stepping on its own loss.

        :returns: the mean of the model's Pyro objective over the epoch (nats per point).
        :raises TrainingDiverged: if a loss becomes NaN or infinite.
        """
        total, count = 0.0, 0
        for x, _, idx in loader:
            if self.kind == "vaegan":
                out = vaegan_step(self.model, self.guide, x, self.optimizers, self.gamma, idx)
            else:
                out = aae_step(self.model, x, self.optimizers, idx)
            if not all(v == v and abs(v) != float("inf") for v in out.values()):
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
