"""The per-data-point importance-weighted bound (Burda, Grosse & Salakhutdinov 2015) as a training objective.

.. math:: \\mathcal{L}_K(x_n) = \\mathbb{E}_{z_{1:K} \\sim q(\\cdot|x_n)}
          \\Big[\\log \\frac1K \\sum_{k=1}^K w_{kn}\\Big], \\qquad w_{kn} = \\frac{p(x_n, z_k)}{q(z_k | x_n)}

For a reparameterized guide the gradient is the pathwise gradient of Burda et al. For guide sites that cannot be
reparameterized (discrete latents: ``has_rsample`` is false) the pathwise gradient misses the term from the
sampling distribution; it is added as the score-function term of VIMCO (Mnih & Rezende 2016), with the
leave-one-out baseline

.. math:: \\hat{\\mathcal{L}}_{-k} = \\log \\frac1K \\Big(\\sum_{j \\ne k} w_j + \\exp\\Big(\\frac{1}{K-1}
          \\sum_{j\\ne k} \\log w_j\\Big)\\Big),

so the surrogate is :math:`\\hat{\\mathcal{L}} + \\sum_k (\\hat{\\mathcal{L}} - \\hat{\\mathcal{L}}_{-k})_{\\text{detached}}
\\log q(z_k|x)` summed over the non-reparameterized sites. With ``K = 1`` there is no other particle: the learning
signal is the particle's own ``log w`` (REINFORCE, unbiased, no baseline).

.. warning:: Pyro's ``RenyiELBO(alpha=0)`` is *not* this bound for models with local latents (pyro issue 3104): it
    log-sum-exps the weights of the whole batch after plate scaling. Here the log-sum-exp is per data point and
    the subsampling factor ``N / B`` of a subsampled data plate multiplies the per-point bounds, outside it.

References:

1. Y. Burda, R. Grosse, R. Salakhutdinov (2015), *Importance Weighted Autoencoders*, ICLR 2016.
2. A. Mnih, D. J. Rezende (2016), *Variational Inference for Monte Carlo Objectives*, ICML (VIMCO).
"""
from __future__ import annotations

import math

import torch
from pyro.distributions.util import scale_and_mask

from ppl_vae.estimators.log_weights import per_point, traced_pair

from .base import ObjectiveELBO, data_plate_scale, plate_nesting

__all__ = ["IWAE_ELBO"]


def _masked_log_prob(site) -> torch.Tensor:
    """The site's log density with its mask but not its scale (weights inside a log-sum-exp are unscaled)."""
    return scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])


def vimco_baselines(log_w: torch.Tensor) -> torch.Tensor:
    """The leave-one-out estimates :math:`\\hat{\\mathcal{L}}_{-k}` of VIMCO: ``(K, N)`` for log weights ``(K, N)``,
    ``K >= 2`` (``log w_k`` replaced by the mean of the other particles' log weights).

    :raises ValueError: if ``K < 2``.
    """
    k = log_w.shape[0]
    if k < 2:
        raise ValueError(f"Expected at least 2 particles for VIMCO's leave-one-out baseline, got {k}")
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # (K, N)
    replaced = log_w.unsqueeze(0).expand(k, *log_w.shape).clone()  # (K, K, N): row k has log w_k replaced
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device)
    replaced[eye] = others_mean
    return replaced.logsumexp(1) - math.log(k)


class IWAE_ELBO(ObjectiveELBO):
    """The per-data-point importance-weighted bound as a training objective: a :class:`pyro.infer.ELBO`.

    ``differentiable_loss`` returns :math:`-s\\sum_n \\log\\frac1K\\sum_k w_{kn}` for the batch (a scalar, ``s = N/B``
    for a subsampled data plate, else 1), whose gradient is the IWAE gradient of Burda et al. (2015), plus VIMCO's
    score-function term for non-reparameterized guide sites. ``loss`` is its value (a float, no gradient).

    :param int num_particles: ``K``, importance samples per data point.
    :param int max_plate_nesting: plate nesting of the pair (found by tracing on the first call if ``None``).
    :raises ValueError: if ``num_particles < 1``; on a call, if the model samples a latent site the guide does not.

    Example::

        >>> import math, pyro, torch
        >>> from ppl_vae.guides import AmortizedNormal
        >>> from ppl_vae.models import LinearGaussian
        >>> model = LinearGaussian(x_dim=5, z_dim=2)
        >>> x = model.marginal().sample((8,))
        >>> guide = AmortizedNormal.for_model(model, x, hidden=(8,))
        >>> svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), IWAE_ELBO(num_particles=5))
        >>> math.isfinite(svi.step(x))
        True
    """

    def __init__(self, num_particles: int = 50, max_plate_nesting: int | None = None):
        if num_particles < 1:
            raise ValueError(f"Expected num_particles >= 1, got {num_particles}")
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        self._nesting = max_plate_nesting

    def _log_weights(self, model, guide, x, idx=None):
        """``(log w (K, N), log q of the non-reparameterized guide sites (K, N) or None, s)``."""
        if self._nesting is None:
            self._nesting = plate_nesting(model, guide, x, idx)
        k, n = self.num_particles, x.shape[0]
        model_trace, guide_trace, total = traced_pair(model, guide, x, idx, k, self._nesting)
        log_w, score = x.new_zeros(k, n, dtype=torch.get_default_dtype()), None
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if not site["is_observed"] and name not in guide_trace.nodes:
                raise ValueError(f"Expected the guide to sample the model's latent site {name!r}, but it does not")
            log_w = log_w + per_point(site, _masked_log_prob(site), total, k, n)
        for site in guide_trace.nodes.values():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            log_q = per_point(site, _masked_log_prob(site), total, k, n)
            log_w = log_w - log_q
            if not getattr(site["fn"], "has_rsample", False):
                score = log_q if score is None else score + log_q
        return log_w, score, data_plate_scale(model_trace)

    def differentiable_loss_and_elbo(self, model, guide, x, idx=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(-IWAE_K, -ELBO)`` of the batch: the loss (its gradient as described above) and the negative ELBO
        estimated from the same ``K`` particles (the mean of their log weights), both scaled by ``s``."""
        log_w, score, s = self._log_weights(model, guide, x, idx)
        k = self.num_particles
        bound = log_w.logsumexp(0) - math.log(k)  # (N,)
        loss = -s * bound.sum()
        if score is not None:
            signal = log_w.detach() if k == 1 else bound.detach() - vimco_baselines(log_w.detach())
            surrogate = -s * (signal * score).sum()
            loss = loss + (surrogate - surrogate.detach())
        return loss, (-s * log_w.detach().mean(0).sum())

    @torch.no_grad()
    def loss(self, model, guide, x, idx=None) -> float:
        """The negative IWAE bound of the batch (nats, summed over points and scaled by ``s``), as a float."""
        log_w, _, s = self._log_weights(model, guide, x, idx)
        return (-s * (log_w.logsumexp(0) - math.log(self.num_particles)).sum()).item()

    def __repr__(self) -> str:
        return f"IWAE_ELBO(num_particles={self.num_particles})"
