"""Guides that are a distribution over the model's flat, unconstrained latent space (as Pyro's ``AutoContinuous``).

A :class:`LatentSpaceGuide` draws one vector :math:`u_n \\in \\mathbb{R}^D` per data point from
``latent_distribution(x, idx)`` (an auxiliary site), maps it to every latent site of the model with
:meth:`~ppl_vae.latent_space.LatentSpace.constrain_sites`, and samples each site as a ``Delta`` carrying
:math:`-\\log|\\det J|`, so that the guide's density of the sites is
:math:`q(z) = q(u)\\,|\\det J_T(u)|^{-1}`. Any family over :math:`\\mathbb{R}^D` — diagonal or full-covariance
Gaussians, flows — thereby becomes a guide for every pair: several sites, constrained supports, matrix-shaped
latents, nested plates.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn

from ppl_vae.conventions import DATA_PLATE, default_idx
from ppl_vae.latent_space import LatentSpace, as_latent_space
from ppl_vae.streams import reparameterize

__all__ = ["LatentSpaceGuide", "PointIndex", "AUX_SITE"]

AUX_SITE = "_ppl_vae_latent"


class _PointBatch(TorchDistribution):
    """``base`` (batch ``(N,)``, event ``(D,)``) seen with batch ``(*lead, N, 1, ..., 1)``: ``N`` on the data plate's
    dim, ``lead`` the dims plates add on the left (particles).

    Samples are kept with their log density, so transforms that cannot invert (planar, radial) still score what they
    sampled."""

    arg_constraints = {}
    has_rsample = True

    def __init__(self, base, ones: int, lead=()):
        self.base, self.ones, self.lead = base, ones, torch.Size(lead)
        n, d = base.batch_shape[-1], base.event_shape[-1]
        self._cache = None
        super().__init__(self.lead + torch.Size((n,) + (1,) * ones), torch.Size((d,)), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        own = self.batch_shape[len(self.lead):]
        if batch_shape[len(batch_shape) - len(own):] != own:
            raise ValueError(f"Cannot expand a per-point latent distribution of batch shape {tuple(self.batch_shape)} "
                             f"to {tuple(batch_shape)}")
        return _PointBatch(self.base, self.ones, batch_shape[: len(batch_shape) - len(own)])

    @property
    def support(self):
        return self.base.support

    def _reshape(self, u):
        return u.reshape(*u.shape[:-2], u.shape[-2], *(1,) * self.ones, u.shape[-1])

    def rsample(self, sample_shape=()):
        u = self.base.rsample(torch.Size(sample_shape) + self.lead)
        out = self._reshape(u)
        self._cache = (out, self._reshape(self.base.log_prob(u)[..., None])[..., 0])
        return out

    def rsample_from_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The sample made of standard-normal ``noise`` (shape ``(*lead, N, 1, ..., 1, D)``), for base distributions of
        the Normal family or flows over one (per-point random streams, :mod:`ppl_vae.streams`)."""
        flat = noise.reshape(*noise.shape[: noise.dim() - 2 - self.ones], noise.shape[-2 - self.ones], noise.shape[-1])
        u = reparameterize(self.base, flat)
        if u is None:
            raise NotImplementedError(f"No noise reparameterization for {type(self.base).__name__}")
        out = self._reshape(u)
        self._cache = (out, self._reshape(self.base.log_prob(u)[..., None])[..., 0])
        return out

    def sample(self, sample_shape=()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value):
        if self._cache is not None and value is self._cache[0]:
            return self._cache[1]
        flat = value.reshape(*value.shape[: value.dim() - 2 - self.ones], value.shape[-2 - self.ones], value.shape[-1])
        lp = self.base.log_prob(flat)
        return lp.reshape(*lp.shape, *(1,) * self.ones)


class PointIndex(nn.Module):
    """Maps the data points' own indices ``idx`` to the rows of per-point parameter tables.

    :param points: the number of points ``N`` (indices ``0..N-1``) or their indices ``(N,)`` (distinct integers).
    :raises ValueError: if the indices repeat.
    """

    def __init__(self, points):
        super().__init__()
        index = torch.arange(points) if isinstance(points, int) else torch.as_tensor(points).long().flatten()
        if index.unique().numel() != index.numel():
            raise ValueError("Expected distinct point indices for a per-datapoint guide, got repeated indices")
        self.register_buffer("index", index)
        self.identity = bool(torch.equal(index, torch.arange(index.numel())))

    def __len__(self) -> int:
        return self.index.numel()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """``(B,)`` rows for ``idx (B,)``.

        :raises ValueError: if a point was not among those of the guide.
        """
        idx = idx.to(self.index.device).long()
        n = len(self)
        if self.identity:
            bad = (idx < 0) | (idx >= n)
            rows = idx
        else:
            order = torch.argsort(self.index)
            pos = torch.searchsorted(self.index[order], idx).clamp(max=n - 1)
            rows = order[pos]
            bad = self.index[rows] != idx
        if bool(bad.any()):
            raise ValueError(f"idx out of range: this per-datapoint guide has parameters for {n} points, got idx "
                             f"{idx[bad][:5].tolist()} that are not among them")
        return rows

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.identity = bool(torch.equal(self.index, torch.arange(self.index.numel(), device=self.index.device)))


class LatentSpaceGuide(nn.Module):
    """Base class of guides defined by a distribution over the latent space ``space``.

    :param space: the model's :class:`~ppl_vae.latent_space.LatentSpace`, or ``{site: size}`` for real vector sites
        in a data plate at ``dim=-1`` (:meth:`~ppl_vae.latent_space.LatentSpace.from_sites`).

    Subclasses implement ``latent_distribution(x, idx)``: a distribution with batch shape ``(N,)`` and event shape
    ``(D,)``. Sites: an auxiliary ``_ppl_vae_latent`` and every continuous latent site of the model (``Delta``), in
    the model's plates.
    """

    def __init__(self, space: LatentSpace | dict[str, int]):
        super().__init__()
        space = as_latent_space(space)
        space.require_continuous(type(self).__name__)
        self.space = space

    def latent_distribution(self, x: torch.Tensor, idx: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError

    def latent_log_prob(self, x: torch.Tensor, idx: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
        """``log q(u | x)`` of points ``u (S, N, D)`` in the latent space: ``(S, N)``."""
        return self.latent_distribution(x, default_idx(x, idx)).log_prob(u)

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None):
        idx = default_idx(x, idx)
        n, d = x.shape[0], self.space.dim
        ones = -self.space.data_dim - 1
        base = self.latent_distribution(x, idx)
        plates = self.space.plates(x, idx)
        with plates[DATA_PLATE]:
            u = pyro.sample(AUX_SITE, _PointBatch(base, ones), infer={"is_auxiliary": True})
        u = u.reshape(*u.shape[: u.dim() - 2 - ones], n, d)
        latents, terms = self.space.constrain_sites(u)
        self.space.sample_sites(latents, terms, plates)
        return latents
