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
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.conventions import DATA_PLATE

__all__ = ["GaussianMixture", "fit_gmm", "empty_guide", "kmeans_pp_init"]


class GaussianMixture(nn.Module):
    """``model(x, idx=None)`` with sites ``c`` (latent, ``Categorical``, shape ``(N,)``) and ``x`` (observed,
    ``event_dim=1``, ``(N, D)``) in plate ``data``.

    :param int num_components: ``K``. :param int x_dim: ``D``.
    :param init_locs: optional ``(K, D)`` initial means (e.g. ``K`` random data points).
    :param float init_scale: initial standard deviation of every component.
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
    """
    from ppl_vae.train import Trainer

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
