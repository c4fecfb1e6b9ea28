"""The free-bits objective (Kingma et al. 2016, the IAF paper): a KL floor per latent dimension.

.. math:: \\widetilde{\\mathcal{L}}_\\lambda = \\sum_{n=1}^N \\mathbb{E}_{q(z|x_n)}[\\log p(x_n|z)]
          - N \\sum_{d=1}^D \\max\\big(\\lambda, \\mathrm{KL}_d\\big),
          \\qquad \\mathrm{KL}_d = \\frac1N\\sum_{n=1}^N \\mathrm{KL}\\big(q(z_d|x_n) \\,\\|\\, p(z_d)\\big)

with :math:`\\mathrm{KL}_d` averaged over the minibatch. A dimension whose KL is below :math:`\\lambda` nats
pays a constant :math:`\\lambda` — no gradient pushes its posterior onto the prior — so the encoder can start
using it before the KL penalty switches it off (posterior collapse). :math:`\\lambda = 0` is the ELBO with an
analytic KL (as ``TraceMeanField_ELBO``).

The KL per dimension is analytic (``torch.distributions.kl_divergence`` of the Normal base distributions of the
guide and the prior), found by tracing: the guide's trace, and the model replayed on it. The likelihood is the
sum of the observed sites' log densities. :meth:`FreeBitsELBO.loss` reports the true, un-floored negative ELBO.

References:

1. Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016), *Improved Variational Inference with Inverse
   Autoregressive Flow* ("free bits"; the paper floors the KL of groups of latents, here every dimension is its
   own group).
"""
from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask

from ppl_vae.conventions import max_plate_nesting
from ppl_vae.estimators.kl import latent_kl_terms
from ppl_vae.estimators.log_weights import traced_pair

__all__ = ["FreeBitsELBO"]


class FreeBitsELBO:
    """The free-bits objective with Pyro's ELBO interface (``differentiable_loss`` and ``loss``).

    Needs every latent site to be a Normal (``.to_event``) in the guide with a Normal prior in the model, and
    a reparameterized guide.

    :param float free_bits_per_dim: :math:`\\lambda`, nats per latent dimension (``>= 0``).
    :param int num_particles: samples of ``z`` per data point for the likelihood term.
    :param int max_plate_nesting: plate nesting of the pair (found by tracing on the first call if ``None``).
    :raises ValueError: if ``free_bits_per_dim < 0`` (or NaN) or ``num_particles < 1``.

    Example::

        >>> import torch
        >>> from ppl_vae.guides import AmortizedNormal
        >>> from ppl_vae.models import BernoulliVAE
        >>> from ppl_vae.objectives import FreeBitsELBO
        >>> from ppl_vae.training import Trainer
        >>> model, x = BernoulliVAE(z_dim=4, hidden=(16,)), torch.rand(8, 784).bernoulli()
        >>> guide = AmortizedNormal.for_model(model, x, hidden=(16,))
        >>> trainer = Trainer(model, guide, FreeBitsELBO(free_bits_per_dim=0.25), lr=1e-3)
        >>> trainer.step(x) > 0          # the objective, nats per image
        True
    """

    def __init__(self, free_bits_per_dim: float, num_particles: int = 1, max_plate_nesting: int | None = None):
        if not free_bits_per_dim >= 0:
            raise ValueError(f"Expected free_bits_per_dim >= 0, got {free_bits_per_dim}")
        if num_particles < 1:
            raise ValueError(f"Expected num_particles >= 1, got {num_particles}")
        self.free_bits_per_dim, self.num_particles = float(free_bits_per_dim), num_particles
        self._nesting = max_plate_nesting

    def _terms(self, model, guide, x, idx):
        """``(log-likelihood of the batch, [(name, kl (S, ..., N, D), weight (S, ..., N))])``; the likelihood is
        summed over the batch and averaged over the ``S`` particles."""
        if self._nesting is None:
            self._nesting = max_plate_nesting(model, guide, x, idx)
        model_trace, guide_trace, _ = traced_pair(model, guide, x, idx, self.num_particles, self._nesting)
        log_lik = x.new_zeros(())
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                lp = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
                log_lik = log_lik + lp.sum()
        return log_lik / self.num_particles, latent_kl_terms(model_trace, guide_trace)

    def _minibatch_kl(self, kl: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(KL_d (D,), points)``: the KL of each dimension averaged over the minibatch (and particles), and the
        number of data points it stands for (``N``, times the site's scale)."""
        w = weight.unsqueeze(-1)
        total = weight.sum()
        return (kl * w).reshape(-1, kl.shape[-1]).sum(0) / total, total / self.num_particles

    def differentiable_loss(self, model, guide, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`-\\widetilde{\\mathcal{L}}_\\lambda` of the batch ``x (N, ...)``: a differentiable scalar (the batch
        sum, like Pyro's ELBOs). Dimensions with :math:`\\mathrm{KL}_d < \\lambda` contribute exactly
        :math:`N\\lambda` and no gradient."""
        log_lik, terms = self._terms(model, guide, x, idx)
        loss = -log_lik
        for _, kl, weight in terms:
            kl_d, points = self._minibatch_kl(kl, weight)
            loss = loss + points * kl_d.clamp(min=self.free_bits_per_dim).sum()
        return loss

    @torch.no_grad()
    def loss(self, model, guide, x: torch.Tensor, idx: torch.Tensor | None = None) -> float:
        """The true negative ELBO of the batch (analytic KL, no floor), as a float: what is reported."""
        log_lik, terms = self._terms(model, guide, x, idx)
        kl = sum((kl * weight.unsqueeze(-1)).sum() for _, kl, weight in terms) / self.num_particles
        return (kl - log_lik).item()

    def __repr__(self) -> str:
        return f"FreeBitsELBO(free_bits_per_dim={self.free_bits_per_dim}, num_particles={self.num_particles})"
