"""The per-data-point importance-weighted bound (Burda, Grosse & Salakhutdinov 2015) as a training objective.

.. warning:: Pyro's ``RenyiELBO(alpha=0)`` is *not* this bound for models with local latents (pyro issue 3104).
"""
from __future__ import annotations

import math

import torch

from ppl_vae.conventions import max_plate_nesting
from ppl_vae.estimators.log_weights import log_weights

__all__ = ["IWAE_ELBO"]


class IWAE_ELBO:
    """The per-data-point importance-weighted bound as a training objective, with Pyro's ELBO interface
    (``loss`` and ``differentiable_loss``), for reparameterized guides.

    ``differentiable_loss`` returns :math:`-\\sum_n \\log\\frac1K\\sum_k w_{kn}` for the batch (a scalar),
    whose gradient is the IWAE gradient of Burda et al. (2015).

    :param int num_particles: ``K``.
    :raises ValueError: if ``num_particles < 1``.
    """

    def __init__(self, num_particles: int = 50):
        if num_particles < 1:
            raise ValueError(f"Expected num_particles >= 1, got {num_particles}")
        self.num_particles = num_particles
        self._nesting = None

    def differentiable_loss(self, model, guide, x, idx=None):
        if self._nesting is None:
            self._nesting = max_plate_nesting(model, guide, x, idx)
        lw = log_weights(model, guide, x, idx, self.num_particles, nesting=self._nesting)
        return -(lw.logsumexp(0) - math.log(self.num_particles)).sum()

    @torch.no_grad()
    def loss(self, model, guide, x, idx=None) -> float:
        return self.differentiable_loss(model, guide, x, idx).item()
