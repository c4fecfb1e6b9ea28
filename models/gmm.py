"""The Gaussian mixture model: the lecture's first latent-variable model, with a discrete latent per data point.

.. math:: c_n \\sim \\mathrm{Categorical}(\\pi), \\qquad x_n | c_n \\sim \\mathcal{N}(\\mu_{c_n}, \\mathrm{diag}\\,\\sigma_{c_n}^2)

``log p(x)`` is exact (a log-sum-exp over components), the posterior over ``c`` is the responsibilities, and
fitting by SVI marginalizes ``c`` out with Pyro's ``TraceEnum_ELBO`` (``config_enumerate``) and an empty guide:
the ELBO is then exactly ``log p(x)`` and SVI is maximum likelihood.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.conventions import DATA_PLATE

__all__ = ["GaussianMixture", "empty_guide"]


class GaussianMixture(nn.Module):
    """``model(x, idx=None)`` with sites ``c`` (latent, ``Categorical``, shape ``(N,)``) and ``x`` (observed,
    ``event_dim=1``, ``(N, D)``) in plate ``data``.

    :param int num_components: ``K``.
    :param int x_dim: ``D``.
    :param init_locs: optional ``(K, D)`` initial means (e.g. ``K`` random data points).
    :param float init_scale: initial standard deviation of every component.
    :raises ValueError: if ``init_locs`` is not ``(num_components, x_dim)``.
    """

    def __init__(self, num_components: int, x_dim: int, init_locs: torch.Tensor | None = None, init_scale: float = 1.0):
        super().__init__()
        if init_locs is None:
            init_locs = torch.randn(num_components, x_dim)
        if init_locs.shape != (num_components, x_dim):
            raise ValueError(f"Expected init_locs of shape ({num_components}, {x_dim}), got {tuple(init_locs.shape)}")
        self.num_components, self.x_dim = num_components, x_dim
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(init_locs.detach().clone())
        self.raw_scales = nn.Parameter(torch.full((num_components, x_dim), float(init_scale)).expm1().log())

    @property
    def scales(self) -> torch.Tensor:
        return softplus(self.raw_scales)

    def forward(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None, num_points: int | None = None):
        n = x.shape[0] if x is not None else num_points
        with pyro.plate(DATA_PLATE, n, dim=-1):
            c = pyro.sample("c", dist.Categorical(logits=self.logits))
            return pyro.sample("x", dist.Normal(self.locs[c], self.scales[c]).to_event(1), obs=x)

    def components(self) -> dist.Distribution:
        """The ``K`` component densities, batch shape ``(K,)``, event ``(D,)``."""
        return dist.Normal(self.locs, self.scales).to_event(1)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, sigma_k)]``: ``(N,)`` for ``x (N, D)``."""
        return torch.logsumexp(self._log_joint(x), -1)

    def _log_joint(self, x):
        return self.logits.log_softmax(-1) + self.components().log_prob(x[:, None, :])  # (N, K)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """The exact posterior ``p(c = k | x_n)``: ``(N, K)``."""
        return self._log_joint(x).softmax(-1)

    def exact_posterior_guide(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        """A guide sampling ``c`` from the exact posterior."""
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return pyro.sample("c", dist.Categorical(probs=self.responsibilities(x)))

    @torch.no_grad()
    def sample(self, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num`` draws: ``x (num, D)`` and their components ``c (num,)``."""
        trace = pyro.poutine.trace(self).get_trace(None, num_points=num)
        return trace.nodes["x"]["value"], trace.nodes["c"]["value"]


def empty_guide(x: torch.Tensor, idx: torch.Tensor | None = None) -> None:
    """The guide of a model whose latents are all enumerated: it samples nothing."""


