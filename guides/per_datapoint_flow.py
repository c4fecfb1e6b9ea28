"""Non-amortized flow guides: a per-point Gaussian over the latent space made richer by flows whose parameters belong
to one data point each (the :math:`q^*_{Flow}` family of Cremer et al. 2018, optimized per point).

.. math:: \\varepsilon \\sim \\mathcal{N}(0, I_D), \\qquad u_n = \\mu_n + \\sigma_n \\odot f_n(\\varepsilon)

:math:`f_n = f_{n,K} \\circ \\dots \\circ f_{n,1}` acts on standardized coordinates, so a flow at the identity is the
FFG :math:`\\mathcal{N}(\\mu_n, \\mathrm{diag}\\,\\sigma_n^2)` itself: the flow family contains the FFG, and a flow
started from the fitted FFG at the identity can only improve on it (:func:`ppl_vae.gap.fit_local_guide` does so).
Kinds of :math:`f_{n,k}` (:data:`LOCAL_FLOWS`):

- ``"coupling"`` (the default for ``D >= 2``): affine coupling layers with per-point MLP conditioners, alternating
  halves (:mod:`ppl_vae.guides.point_coupling`); invertible.
- ``"spline"`` (the default for ``D = 1``, where a coupling has no other half): elementwise rational-quadratic
  splines per point and coordinate (:mod:`ppl_vae.guides.point_spline`); invertible.
- ``"planar"``, ``"radial"``: Pyro's planar and radial flows with per-point parameters (rank-one changes per
  transform). They cannot invert: the guide then scores only what it sampled (pyro issue 2718), so it cannot join
  a mixture proposal or start AIS.

Parameters are per-point tables looked up by the data points' rows, so every point has its own flow and all points
are optimized together in one batch.
"""
from __future__ import annotations

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn.functional import softplus

from ppl_vae.latent_space import LatentSpace

from .latent_guide import LatentSpaceGuide, PointIndex
from .per_datapoint_normal import initial_table, inverse_softplus
from .point_coupling import point_affine_coupling
from .point_spline import point_spline

__all__ = ["PerDatapointFlow", "LOCAL_FLOWS", "INVERTIBLE_LOCAL_FLOWS", "default_local_flow"]


class _Lookup(nn.Module):
    """Returns per-point parameter rows ``table[rows]`` split into the pieces a transform expects."""

    def __init__(self, num_points: int, sizes: tuple[int, ...], init_std: float = 0.01):
        super().__init__()
        self.sizes = sizes
        self.table = nn.Parameter(init_std * torch.randn(num_points, sum(sizes)))

    def forward(self, rows: torch.Tensor):
        return self.table[rows].split(self.sizes, -1)


def _planar(num_points, dim, hidden, count_bins):
    return T.ConditionalPlanar(_Lookup(num_points, (1, dim, dim)))


def _radial(num_points, dim, hidden, count_bins):
    return T.ConditionalRadial(_Lookup(num_points, (dim, 1, 1)))


def _coupling(num_points, dim, hidden, count_bins):
    return point_affine_coupling(num_points, dim, hidden)


def _spline(num_points, dim, hidden, count_bins):
    return point_spline(num_points, dim, count_bins)


LOCAL_FLOWS = {"coupling": _coupling, "spline": _spline, "planar": _planar, "radial": _radial}
"""Kinds of per-point transforms: ``kind -> (num_points, dim, hidden, count_bins) -> conditional transform``."""

INVERTIBLE_LOCAL_FLOWS = ("coupling", "spline")
"""The kinds whose guide scores points it did not sample."""


def default_local_flow(dim: int) -> str:
    """The default kind for a latent space of dimension ``dim``: ``"coupling"``, or ``"spline"`` when ``dim == 1``."""
    return "coupling" if dim >= 2 else "spline"


class PerDatapointFlow(LatentSpaceGuide):
    """Guide ``guide(x, idx)``: ``loc[idx] + scale[idx] * f_idx(eps)``, ``eps ~ N(0, I)``, over the latent space.

    :param space: the model's :class:`~ppl_vae.latent_space.LatentSpace` (or ``{site: size}``).
    :param points: the number of data points ``N`` or their own indices ``(N,)`` (as
        :class:`~ppl_vae.guides.PerDatapointNormal`).
    :param init_loc: optional ``(N, D)`` starting means (default 0).
    :param init_scale: optional ``(N, D)`` starting scales (default 1).
    :param int num_flows: transforms :math:`f_{n,k}` (coupling layers alternate which half conditions the other).
    :param str flow: their kind, one of :data:`LOCAL_FLOWS`; ``None`` picks :func:`default_local_flow`.
    :param int hidden: hidden units of each point's coupling network (default ``min(64, max(8, 2 D))``).
    :param int count_bins: bins of each spline.
    :raises ValueError: for an unknown ``flow``, a coupling in one dimension, or tables of the wrong shape.

    The coupling and spline kinds start at the identity, so the guide starts at ``N(init_loc, init_scale^2)``; the
    planar and radial ones start near it (their parameters are drawn with standard deviation 0.01).
    """

    def __init__(self, space: LatentSpace | dict[str, int], points, init_loc=None, init_scale=None, num_flows: int = 4,
                 flow: str | None = None, hidden: int | None = None, count_bins: int = 8):
        super().__init__(space)
        d = self.space.dim
        flow = default_local_flow(d) if flow is None else flow
        if flow not in LOCAL_FLOWS:
            raise ValueError(f"Unknown per-datapoint flow {flow!r}; expected one of {sorted(LOCAL_FLOWS)}")
        if num_flows < 1:
            raise ValueError(f"Expected num_flows >= 1, got {num_flows}")
        self.flow = flow
        self.points = PointIndex(points)
        n = len(self.points)
        self.loc = nn.Parameter(initial_table(self.space, n, init_loc, 0.0, "init_loc"))
        scale = initial_table(self.space, n, init_scale, 1.0, "init_scale")
        self.raw_scale = nn.Parameter(inverse_softplus(scale.clamp_min(1e-6)))
        hidden = min(64, max(8, 2 * d)) if hidden is None else hidden
        self.transforms = nn.ModuleList([LOCAL_FLOWS[flow](n, d, hidden, count_bins) for _ in range(num_flows)])
        self._reverse = T.Permute(torch.arange(d - 1, -1, -1)) if flow == "coupling" else None

    def base_parameters(self) -> list[nn.Parameter]:
        """The per-point Gaussian's parameters (``loc``, ``raw_scale``); the others are the flows'."""
        return [self.loc, self.raw_scale]

    def latent_distribution(self, x, idx):
        rows = self.points(idx)
        loc, scale = self.loc[rows], softplus(self.raw_scale[rows])
        transforms = []
        for k, t in enumerate(self.transforms):
            layer = t.condition(rows)
            # odd coupling layers condition on the other half: reverse the coordinates around them
            transforms += [self._reverse, layer, self._reverse] if self._reverse is not None and k % 2 else [layer]
        transforms.append(T.AffineTransform(loc, scale, event_dim=1, cache_size=1))
        base = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)
        return dist.TransformedDistribution(base, transforms)
