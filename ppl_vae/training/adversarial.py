"""The trainer of the two adversarial models of the zoo (VAE-GAN, AAE), with the interface of
:class:`ppl_vae.training.Trainer` (``train_epoch``, ``state_dict``, ``load_state_dict``, ``history``)."""
from __future__ import annotations

import math

from .aae import AAEOptimizers, aae_step
from .guards import TrainingDiverged, invalid_values_reason
from .vaegan import VAEGANOptimizers, vaegan_step

__all__ = ["AdversarialTrainer"]


class AdversarialTrainer:
    """The :class:`ppl_vae.training.trainer.Trainer` interface over the three-player updates of the VAE-GAN
    (encoder, decoder, discriminator) or the AAE (autoencoder, latent discriminator, regularization).

    Each player's update is guarded (:func:`~ppl_vae.training.guards.guarded_update`): a non-finite loss or gradient
    stops training with :class:`TrainingDiverged` before that update; the players updated earlier in the same batch
    keep their update, so after the error only a saved checkpoint is a consistent state.

    :param str kind: ``"vaegan"`` or ``"aae"``.
    :raises ValueError: for another ``kind``.
    """

    def __init__(self, kind: str, model, guide, lr: float, gamma: float = 1.0):
        if kind not in ("vaegan", "aae"):
            raise ValueError(f"Expected kind 'vaegan' or 'aae', got {kind!r}")
        self.kind, self.model, self.guide, self.gamma = kind, model, guide, gamma
        if kind == "vaegan":
            self.optimizers = VAEGANOptimizers.create(model, guide, lr)
        else:
            self.optimizers = AAEOptimizers.create(model, lr)
        self.history: dict[str, list] = {"epoch": [], "train_elbo": [], "train_objective": [], "valid_elbo": [],
                                         "seconds": []}
        self.steps = 0

    def _optimizer_list(self):
        return [getattr(self.optimizers, f.name) for f in self.optimizers.__dataclass_fields__.values()]

    def step(self, x, idx=None) -> dict[str, float]:
        """The three updates of one batch; returns the step's losses (see ``vaegan_step`` / ``aae_step``).

        :raises TrainingDiverged: naming the step and the player whose loss or gradient is not finite.
        """
        step = self.steps + 1
        try:
            if self.kind == "vaegan":
                out = vaegan_step(self.model, self.guide, x, self.optimizers, self.gamma, idx)
            else:
                out = aae_step(self.model, x, self.optimizers, idx)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e} (step {step} of the {self.kind} training)") from e
        except ValueError as e:
            reason = invalid_values_reason(e)
            if reason is None:
                raise
            raise TrainingDiverged(f"The loss became nan at step {step}: a distribution's parameters are not finite "
                                   f"({reason}) (step {step} of the {self.kind} training)") from e
        bad = {k: v for k, v in out.items() if not math.isfinite(v)}
        if bad:
            raise TrainingDiverged(f"A loss became NaN or infinite at step {step}: {bad}")
        self.steps = step
        return out

    def train_epoch(self, loader, progress=None) -> dict[str, float]:
        """One pass over ``loader``.

        :returns: ``train_objective``: minus the mean pixel reconstruction cross-entropy (nats per point, what the
            autoencoding phase trains); ``train_elbo``: the mean Pyro ELBO of the pair (the VAE-GAN's in feature
            space; the AAE's, with its masked prior, equals ``train_objective``).
        """
        recon = elbo = 0.0
        count = 0
        for x, _, idx in loader:
            out = self.step(x, idx)
            recon += out["reconstruction"] * x.shape[0]
            elbo += out.get("elbo", -out["reconstruction"]) * x.shape[0]
            count += x.shape[0]
            if progress is not None:
                progress.update(1)
                progress.set_postfix(recon=f"{recon / count:.2f}")
        count = max(count, 1)
        return {"train_objective": -recon / count, "train_elbo": elbo / count}

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self._optimizer_list()], "steps": self.steps}

    def load_state_dict(self, state: dict, x=None, idx=None) -> None:
        for o, s in zip(self._optimizer_list(), state["optimizers"]):
            o.load_state_dict(s)
        self.steps = state["steps"]
