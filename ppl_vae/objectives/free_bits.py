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

from ppl_vae.estimators.kl import latent_kl_terms
from ppl_vae.estimators.log_weights import traced_pair

from .base import ObjectiveELBO, plate_nesting, reparameterized_sites

__all__ = ["FreeBitsELBO"]


class FreeBitsELBO(ObjectiveELBO):
    """The free-bits objective as a :class:`pyro.infer.ELBO` (``differentiable_loss``, ``loss``,
    ``loss_and_grads``; ``FreeBitsELBO(...)(model, guide)`` is an ``ELBOModule``).

    Needs every latent site to be a Normal (``.to_event``, possibly ``.mask(m)``) in the guide with a Normal prior
    in the model, masked alike, and a reparameterized guide.

    Site scales are honoured: a subsampled data plate's ``N / B`` and a KL weight β (``LatentScale``, as
    :class:`~ppl_vae.objectives.AnnealedELBO` applies it) multiply the floored KL term, so
    ``AnnealedELBO(FreeBitsELBO(λ), β)`` trains :math:`\\mathbb{E}[\\log p(x|z)] - \\beta \\sum_d \\max(\\lambda, \\mathrm{KL}_d)`.
    Masked-out elements contribute nothing; :math:`\\mathrm{KL}_d` is the mean over the elements that count.

    :param float free_bits_per_dim: :math:`\\lambda`, nats per latent dimension (``>= 0``).
    :param int num_particles: samples of ``z`` per data point for the likelihood term.
    :param int max_plate_nesting: plate nesting of the pair (found by tracing on the first call if ``None``).
    :raises ValueError: if ``free_bits_per_dim`` is negative or NaN or ``num_particles < 1``; on a call, naming the
        site, if a guide site is not reparameterized or not Normal-with-Normal-prior.

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
        if not free_bits_per_dim >= 0 or free_bits_per_dim == float("inf"):
            raise ValueError(f"Expected free_bits_per_dim finite and >= 0, got {free_bits_per_dim}")
        if num_particles < 1:
            raise ValueError(f"Expected num_particles >= 1, got {num_particles}")
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        self.free_bits_per_dim = float(free_bits_per_dim)
        self._nesting = max_plate_nesting

    def _terms(self, model, guide, x, idx):
        """``(log-likelihood of the batch, latent KL terms)``; the likelihood is summed over the batch (site scales
        applied) and averaged over the ``S`` particles."""
        if self._nesting is None:
            self._nesting = plate_nesting(model, guide, x, idx)
        model_trace, guide_trace, _ = traced_pair(model, guide, x, idx, self.num_particles, self._nesting)
        for name, reparameterized in reparameterized_sites(guide_trace).items():
            if not reparameterized:
                raise ValueError(
                    f"Expected a reparameterized guide at every latent site for FreeBitsELBO, but site {name!r} "
                    f"({type(guide_trace.nodes[name]['fn']).__name__}) has no rsample: its likelihood term would get "
                    "no gradient through the samples; use pyro.infer.TraceGraph_ELBO for such sites"
                )
        log_lik = x.new_zeros((), dtype=torch.get_default_dtype())
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                lp = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
                log_lik = log_lik + lp.sum()
        return log_lik / self.num_particles, latent_kl_terms(model_trace, guide_trace)

    def _kl_terms(self, terms) -> tuple[torch.Tensor, torch.Tensor]:
        """``(floored KL term, true KL term)`` of the batch, each scaled and averaged over the particles."""
        floored = true = 0.0
        for term in terms:
            weight = term.scale.unsqueeze(-1) * term.mask  # (S, ..., N, D)
            total = weight.reshape(-1, weight.shape[-1]).sum(0)  # (D,): points (times scale) that count
            kl_sum = (term.kl * weight).reshape(-1, weight.shape[-1]).sum(0)
            kl_d = torch.where(total > 0, kl_sum / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
            floored = floored + (total * kl_d.clamp(min=self.free_bits_per_dim)).sum() / self.num_particles
            true = true + kl_sum.sum() / self.num_particles
        return floored, true

    def differentiable_loss_and_elbo(self, model, guide, x: torch.Tensor, idx: torch.Tensor | None = None):
        """``(loss, -ELBO)`` of the batch ``x (N, ...)`` from one pass: the loss
        :math:`-\\widetilde{\\mathcal{L}}_\\lambda` (a differentiable scalar, the batch sum like Pyro's ELBOs;
        dimensions with :math:`\\mathrm{KL}_d < \\lambda` contribute exactly :math:`N\\lambda` and no gradient) and
        the true negative ELBO (analytic KL, no floor) of the same samples."""
        log_lik, terms = self._terms(model, guide, x, idx)
        floored, true = self._kl_terms(terms)
        return floored - log_lik, (true - log_lik).detach()

    @torch.no_grad()
    def loss(self, model, guide, x: torch.Tensor, idx: torch.Tensor | None = None) -> float:
        """The true negative ELBO of the batch (analytic KL, no floor), as a float: what is reported."""
        return self.differentiable_loss_and_elbo(model, guide, x, idx)[1].item()

    def __repr__(self) -> str:
        return f"FreeBitsELBO(free_bits_per_dim={self.free_bits_per_dim}, num_particles={self.num_particles})"
