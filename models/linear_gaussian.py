"""The linear-Gaussian latent-variable model (probabilistic PCA; Tipping & Bishop 1999).

.. math:: z_n \\sim \\mathcal{N}(0, I_d), \\qquad x_n \\sim \\mathcal{N}(W z_n + b, \\sigma^2 I_D)

Everything is closed-form: :math:`\\log p(x) = \\log\\mathcal{N}(x; b, WW^\\top + \\sigma^2 I)`, the posterior
:math:`p(z|x) = \\mathcal{N}(\\Sigma W^\\top (x - b)/\\sigma^2, \\Sigma)` with
:math:`\\Sigma = (I + W^\\top W/\\sigma^2)^{-1}`, and the ELBO of any Gaussian guide. It is the test oracle of
every estimator and gap in the library.
"""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["LinearGaussian"]


class LinearGaussian(nn.Module):
    """``model(x, idx=None)`` with sites ``z`` (latent, ``event_dim=1``, ``(N, d)``) and ``x`` (observed,
    ``event_dim=1``, ``(N, D)``) in plate ``data``.

    :param int x_dim: ``D``.
    :param int z_dim: ``d``.
    :param float noise: ``sigma``.
    :param weight: optional ``(D, d)`` loading matrix ``W`` (default: random with a fixed seed).
    :raises ValueError: if ``weight`` is not ``(x_dim, z_dim)``.
    """

    def __init__(self, x_dim: int = 5, z_dim: int = 2, noise: float = 0.5, weight: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        if weight is None:
            weight = torch.randn(x_dim, z_dim, generator=torch.Generator().manual_seed(seed))
        if weight.shape != (x_dim, z_dim):
            raise ValueError(f"Expected weight of shape ({x_dim}, {z_dim}), got {tuple(weight.shape)}")
        self.x_dim, self.z_dim = x_dim, z_dim
        self.weight = nn.Parameter(weight.clone().to(torch.get_default_dtype()))
        self.bias = nn.Parameter(torch.zeros(x_dim))
        self.log_noise = nn.Parameter(torch.tensor(math.log(noise)))

    @property
    def noise(self) -> torch.Tensor:
        return self.log_noise.exp()

    def forward(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None, num_points: int | None = None):
        n = x.shape[0] if x is not None else num_points
        loc = self.weight.new_zeros(()).expand(n, self.z_dim)
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            mean = z @ self.weight.T + self.bias
            return pyro.sample("x", dist.Normal(mean, self.noise).to_event(1), obs=x)

    # ---- closed forms -------------------------------------------------------------------------
    def marginal(self) -> dist.MultivariateNormal:
        """``p(x) = N(b, W W^T + sigma^2 I)``, event shape ``(D,)``."""
        cov = self.weight @ self.weight.T + self.noise**2 * torch.eye(self.x_dim, dtype=self.weight.dtype)
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)``: ``(N,)`` nats for ``x (N, D)``."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior ``p(z | x)``: returns ``loc (N, d)`` and the shared covariance ``(d, d)``."""
        precision = torch.eye(self.z_dim, dtype=x.dtype) + self.weight.T @ self.weight / self.noise**2
        cov = torch.linalg.inv(precision)
        loc = (x - self.bias) @ self.weight @ cov / self.noise**2
        return loc, cov

    def elbo_gaussian(self, x: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        """Closed-form ELBO ``E_q[log p(x, z) - log q(z)]`` of ``q = N(loc, cov)``: ``(N,)`` nats.

        :param loc: ``(N, d)``.
        :param cov: ``(d, d)`` or ``(N, d, d)`` covariance.
        """
        s2 = self.noise**2
        resid = x - loc @ self.weight.T - self.bias
        wcw = torch.einsum("ij,...jk,ik->...", self.weight, cov, self.weight)  # tr(W C W^T)
        tr_c = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
        log_lik = -0.5 * self.x_dim * torch.log(2 * math.pi * s2) - (resid.pow(2).sum(-1) + wcw) / (2 * s2)
        log_prior = -0.5 * self.z_dim * math.log(2 * math.pi) - 0.5 * (loc.pow(2).sum(-1) + tr_c)
        entropy = 0.5 * self.z_dim * (1 + math.log(2 * math.pi)) + 0.5 * torch.logdet(cov)
        return log_lik + log_prior + entropy

    def optimal_ffg(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fully-factorized Gaussian closest to the posterior in ``KL(q || p)``: the posterior mean and
        variances ``1 / diag(Sigma^{-1})``. Returns ``loc (N, d)``, ``scale (d,)``."""
        loc, cov = self.posterior(x)
        return loc, torch.diagonal(torch.linalg.inv(cov)).rsqrt()

    def ffg_approximation_gap(self) -> torch.Tensor:
        """``KL(q*_FFG || p(z|x)) = (sum_i log Lambda_ii - log|Lambda|) / 2`` with ``Lambda`` the posterior
        precision: the approximation gap of the best diagonal Gaussian (the same for every x)."""
        precision = torch.linalg.inv(self.posterior(self.bias[None])[1])
        return 0.5 * (torch.diagonal(precision).log().sum() - torch.logdet(precision))

    def exact_posterior_guide(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        """A guide that samples the exact posterior (full covariance); site ``z`` in plate ``data``."""
        loc, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))
