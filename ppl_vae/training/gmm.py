"""Fitting the Gaussian mixture :class:`ppl_vae.models.GaussianMixture` by SVI with ``TraceEnum_ELBO``: the
discrete component of every point is summed out exactly (Pyro's parallel enumeration)."""
from __future__ import annotations

import pyro
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from ppl_vae.models.gmm import GaussianMixture, empty_guide

from .trainer import Trainer

__all__ = ["fit_gmm", "kmeans_pp_init"]


def kmeans_pp_init(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` data points chosen by k-means++ seeding: each next one with probability proportional to its squared
    distance to the nearest one already chosen. Returns ``(k, D)``."""
    centers = [x[torch.randint(x.shape[0], (1,), generator=generator)].squeeze(0)]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centers)).min(1).values.pow(2)
        centers.append(x[torch.multinomial(d2 / d2.sum(), 1, generator=generator)].squeeze(0))
    return torch.stack(centers)


def fit_gmm(x: torch.Tensor, num_components: int, num_steps: int = 500, lr: float = 0.05, seed: int = 0,
            batch_size: int | None = None) -> tuple[GaussianMixture, list[float]]:
    """Fit a Gaussian mixture to ``x (N, D)`` by SVI with ``TraceEnum_ELBO`` (the component of every point
    enumerated in parallel), Adam, means initialized by k-means++ seeding (Arthur & Vassilvitskii 2007).

    :returns: the model and the loss (negative log-likelihood in nats per point) at every step.
    :raises ValueError: if ``x`` is not a finite ``(N, D)`` tensor.
    """
    if x.dim() != 2 or not torch.isfinite(x).all():
        raise ValueError(f"Expected finite data of shape (N, D), got shape {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    init = kmeans_pp_init(x, num_components, g)
    model = GaussianMixture(num_components, x.shape[1], init, init_scale=float(x.std(0).mean()))
    pyro.set_rng_seed(seed)
    trainer = Trainer(config_enumerate(model), empty_guide, TraceEnum_ELBO(max_plate_nesting=1), lr=lr, modules=[model])
    losses = []
    for _ in range(num_steps):
        if batch_size is None:
            losses.append(trainer.step(x))
        else:
            idx = torch.randperm(x.shape[0], generator=g)[:batch_size]
            losses.append(trainer.step(x[idx], idx))
    return model, losses
