"""The non-amortized fully-factorized Gaussian guide: a free mean and scale for every data point, over the model's
unconstrained latent space (the :math:`q^*_{FFG}` of Cremer et al. 2018 once optimized per point).

.. math:: q_n(u) = \\mathcal{N}(u; \\mu_n, \\mathrm{diag}\\,\\sigma_n^2), \\qquad z_n = T(u)
"""
from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.latent_space import LatentSpace

from .latent_guide import LatentSpaceGuide, PointIndex

__all__ = ["PerDatapointNormal", "inverse_softplus"]


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """The inverse of ``softplus``, for ``y > 0``."""
    return y + torch.log(-torch.expm1(-y))


def initial_table(space: LatentSpace, num_points: int, value, default: float, name: str) -> torch.Tensor:
    """A ``(num_points, D)`` starting table: ``value`` — a ``(num_points, D)`` tensor, or ``{site: (num_points, size)}``
    concatenated in the latent space's order — or ``default`` everywhere.

    :raises ValueError: if the shapes do not match the latent space.
    """
    if value is None:
        return torch.full((num_points, space.dim), default)
    if isinstance(value, dict):
        missing = [b.name for b in space.blocks if b.name not in value]
        if missing:
            raise ValueError(f"Expected {name} for the sites {space.names}, missing {missing}")
        value = torch.cat([torch.as_tensor(value[b.name]).reshape(num_points, -1) for b in space.blocks], -1)
    value = torch.as_tensor(value).detach().clone()
    if value.shape != (num_points, space.dim):
        raise ValueError(f"Expected {name} of shape ({num_points}, {space.dim}) (points, latent dimension), got "
                         f"{tuple(value.shape)}")
    return value


class PerDatapointNormal(LatentSpaceGuide):
    """Guide ``guide(x, idx)``: ``Normal(loc[idx], scale[idx])`` over the latent space, every site of the model
    obtained through :meth:`~ppl_vae.latent_space.LatentSpace.constrain_sites`.

    :param space: the model's :class:`~ppl_vae.latent_space.LatentSpace` (or ``{site: size}``, see
        :class:`~ppl_vae.guides.LatentSpaceGuide`).
    :param points: the number of data points ``N`` (indices ``0..N-1``) or the points' own indices ``(N,)``; a
        call's ``idx`` selects their rows.
    :param init_loc: optional ``(N, D)`` starting means, or ``{site: (N, size)}`` (default 0).
    :param init_scale: optional ``(N, D)`` starting scales, or ``{site: (N, size)}`` (default 1).
    :raises ValueError: if a table has the wrong shape, or a call's ``idx`` names a point the guide does not have.
    """

    def __init__(self, space: LatentSpace | dict[str, int], points, init_loc=None, init_scale=None):
        super().__init__(space)
        self.points = PointIndex(points)
        n = len(self.points)
        self.loc = nn.Parameter(initial_table(self.space, n, init_loc, 0.0, "init_loc"))
        scale = initial_table(self.space, n, init_scale, 1.0, "init_scale")
        self.raw_scale = nn.Parameter(inverse_softplus(scale.clamp_min(1e-6)))

    def loc_scale(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)``, each ``(B, D)``, of the points ``idx (B,)``."""
        rows = self.points(idx)
        return self.loc[rows], softplus(self.raw_scale[rows])

    def latent_distribution(self, x, idx):
        loc, scale = self.loc_scale(idx)
        return dist.Normal(loc, scale).to_event(1)
