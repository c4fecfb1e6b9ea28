"""Training the VQ-VAE (van den Oord et al. 2017) with Adam on its loss, the codebook at its own learning rate.
The model is :class:`ppl_vae.models.VQVAE`.

:func:`train_vqvae` and ``ppl-vae train --model vqvae`` are one code path: both step with :class:`VQVAETrainer`,
whose optimizer is :func:`vqvae_optimizer` with its default codebook learning rate.
"""
from __future__ import annotations

import torch

from ppl_vae.models.vqvae import VQVAE, perplexity

from .guards import guarded_update
from .trainer import adam, timer

__all__ = ["CODEBOOK_LR_FACTOR", "VQVAETrainer", "train_vqvae", "vqvae_optimizer"]

CODEBOOK_LR_FACTOR = 10.0


def vqvae_optimizer(model: VQVAE, lr: float = 1e-3, codebook_lr: float | None = None) -> torch.optim.Adam:
    """Adam over the encoder and decoder at ``lr`` and the codebook at ``codebook_lr``.

    :param float codebook_lr: default ``CODEBOOK_LR_FACTOR * lr`` (10×). Adam moves every parameter by about ``lr``
        per step whatever the loss's scale, and an encoder output (a sum over a whole layer) moves much faster than a
        code vector (one parameter per coordinate): at equal rates the codes lag, the VQ terms grow to ~300 per point
        and a few codes take most of the use. On the embedded Fashion-MNIST subset (8 latents x 16 dims, 64 codes,
        10 epochs) ``10 * lr`` gave test codebook perplexity 56 instead of 10 and a reconstruction NLL 15 nats lower.
    :raises ValueError: if a learning rate is not positive.
    """
    codebook_lr = CODEBOOK_LR_FACTOR * lr if codebook_lr is None else codebook_lr
    if not (lr > 0 and codebook_lr > 0):
        raise ValueError(f"Expected lr > 0 and codebook_lr > 0, got lr={lr}, codebook_lr={codebook_lr}")
    rest = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("codebook.")]
    optimizer = adam(rest, lr)
    optimizer.add_param_group({"params": [model.codebook.weight], "lr": codebook_lr})
    return optimizer


class VQVAETrainer:
    """The :class:`~ppl_vae.training.trainer.Trainer` interface (``step``, ``train_epoch``, ``state_dict``,
    ``history``) for :meth:`VQVAE.loss`.

    :param model: the :class:`~ppl_vae.models.VQVAE`.
    :param float lr: learning rate of the encoder and decoder.
    :param float codebook_lr: see :func:`vqvae_optimizer`.
    """

    def __init__(self, model: VQVAE, lr: float = 1e-3, codebook_lr: float | None = None):
        self.model = model
        self.optimizer = vqvae_optimizer(model, lr, codebook_lr)
        self.names = {id(p): name for name, p in model.named_parameters()}
        self.history: dict[str, list] = {"epoch": [], "train_elbo": [], "train_objective": [], "valid_elbo": [],
                                         "seconds": []}
        self.steps = 0

    def step(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> tuple[float, float, torch.Tensor]:
        """One Adam step on ``x (B, x_dim)``: ``(loss, reconstruction NLL, codes (B, L))``, nats per point, the codes
        chosen before the update.

        :raises TrainingDiverged: if the loss or a gradient is NaN or infinite (no update is applied).
        """
        terms, codes = self.model._loss_and_codes(x)
        guarded_update(terms.total, self.optimizer, self.steps + 1, names=self.names)
        self.steps += 1
        return terms.total.item(), terms.recon_nll.item(), codes

    def train_epoch(self, loader, progress=None) -> dict[str, float]:
        """One pass over ``loader``.

        :returns: ``train_objective`` and ``train_elbo``: minus the mean loss (the Pyro model's ELBO value:
            log-likelihood minus the VQ penalty), ``recon``: the mean reconstruction NLL (nats per point),
            ``perplexity``: of the codes chosen during the epoch.
        """
        total = recon = 0.0
        count = 0
        counts = torch.zeros(self.model.num_codes, dtype=torch.long)
        for x, _, idx in loader:
            loss, nll, codes = self.step(x, idx)
            counts += torch.bincount(codes.flatten().cpu(), minlength=self.model.num_codes)
            total += loss * x.shape[0]
            recon += nll * x.shape[0]
            count += x.shape[0]
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{total / count:.2f}")
        n = max(count, 1)
        return {"train_objective": -total / n, "train_elbo": -total / n, "recon": recon / n,
                "perplexity": perplexity(counts) if count else float("nan")}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict, x=None, idx=None) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]


def train_vqvae(model: VQVAE, loader, epochs: int, lr: float = 1e-3, codebook_lr: float | None = None) -> dict[str, list]:
    """Train ``model`` with Adam on :meth:`VQVAE.loss` over ``loader`` of ``(x, y, idx)`` batches
    (:class:`VQVAETrainer`, the same steps as ``ppl-vae train --model vqvae``).

    :param float lr: learning rate of the encoder and decoder.
    :param float codebook_lr: learning rate of the codebook, default ``10 * lr`` (:func:`vqvae_optimizer`).
    :returns: per-epoch history ``{"epoch", "loss", "recon", "perplexity", "seconds"}``: the mean training loss and
        reconstruction NLL (nats per point, averaged over the epoch's batches as the parameters changed) and the
        perplexity of the codes chosen during the epoch (each batch's codes before its update).
    :raises TrainingDiverged: if the loss or a gradient becomes NaN or infinite (no update is applied).
    :raises ValueError: if ``epochs`` is negative or a learning rate is not positive.
    """
    if epochs < 0:
        raise ValueError(f"Expected epochs >= 0, got {epochs}")
    trainer = VQVAETrainer(model, lr, codebook_lr)
    history: dict[str, list] = {"epoch": [], "loss": [], "recon": [], "perplexity": [], "seconds": []}
    for epoch in range(1, epochs + 1):
        elapsed = timer()
        out = trainer.train_epoch(loader)
        history["epoch"].append(epoch)
        history["loss"].append(-out["train_objective"])
        history["recon"].append(out["recon"])
        history["perplexity"].append(out["perplexity"])
        history["seconds"].append(elapsed())
    return history
