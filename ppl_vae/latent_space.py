"""The latent space of a model: every continuous latent site of one data point as one flat, unconstrained vector.

Traced once per model (as Pyro's :class:`~pyro.infer.autoguide.AutoContinuous` does for global latents), each
continuous latent site is mapped to the reals by ``biject_to(site.support)`` (positive scales by ``log``, simplices
by stick-breaking, intervals by a logit, ...), its per-point values — the plates nested inside the data plate and its
event dimensions, any shape — are flattened, and the sites are concatenated:

.. math:: u_n = \\big(T_1^{-1}(z_{n,1}), \\dots, T_K^{-1}(z_{n,K})\\big) \\in \\mathbb{R}^D, \\qquad
          \\log p(x_n, u_n) = \\log p(x_n, T(u_n)) + \\log |\\det J_T(u_n)|

Every tool that works on one point's posterior — per-datapoint guides :math:`q^*` (FFG, full covariance across all
sites, flows), AIS and NUTS, guide moments, the 2-D posterior grid — works in this space, so a new pair needs nothing
special. Discrete sites that the model marks for enumeration are summed out of :meth:`LatentSpace.log_joint`; other
discrete sites are refused by name by the tools that need continuous latents (:meth:`LatentSpace.require_continuous`).

Tensors are laid out ``(S, N, D)``: ``S`` particles (samples), ``N`` data points, ``D`` unconstrained coordinates.

References:

1. Kucukelbir, Tran, Ranganath, Gelman, Blei (2017), *Automatic Differentiation Variational Inference*, JMLR.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pyro
import torch
from pyro.poutine.indep_messenger import CondIndepStackFrame
from torch.distributions import biject_to, constraints
from torch.distributions.utils import _sum_rightmost

from .conventions import DATA_PLATE, LatentSite, default_idx, latent_sites, max_plate_nesting, support_name
from .traces import PARTICLE_PLATE, is_auxiliary, per_point, point_log_density, sample_sites, trace_particles

__all__ = ["LatentSpace", "LatentBlock", "as_latent_space"]


@dataclass(frozen=True)
class LatentBlock:
    """One continuous latent site's slice ``u[..., offset:offset + size]`` of the latent vector.

    :ivar str name: the site.
    :ivar transform: ``biject_to(support)``, from the unconstrained values to the site's support.
    :ivar torch.Size batch_shape: the site's plate batch shape per call, the data dimension holding ``1``.
    :ivar int data_position: the index of the data dimension in ``batch_shape``.
    :ivar torch.Size unconstrained_event_shape: the event shape of ``transform.inv(value)``.
    :ivar frames: the site's vectorized plates (``CondIndepStackFrame`` s), the particle plate left out.
    """

    name: str
    site: LatentSite
    transform: object
    batch_shape: torch.Size
    data_position: int
    unconstrained_event_shape: torch.Size
    offset: int
    size: int
    frames: tuple

    @property
    def point_batch_shape(self) -> torch.Size:
        """The plate dimensions of one point's value (the data dimension removed)."""
        b = list(self.batch_shape)
        del b[self.data_position]
        return torch.Size(b)


class LatentSpace:
    """The flat, unconstrained latent space of ``model``, traced once on ``(x, idx)`` (two points suffice).

    :param model: a Pyro model following the conventions (:mod:`ppl_vae.conventions`).
    :param x: ``(N, ...)`` example data.
    :param idx: ``(N,)`` indices or ``None``.
    :ivar int dim: ``D``, the size of one point's latent vector.
    :ivar list blocks: the :class:`LatentBlock` of every continuous latent site, in the model's order.
    :ivar dict enumerated: discrete sites summed out by enumeration (``{name: LatentSite}``).
    :ivar dict discrete: discrete sites neither continuous nor enumerated (tools needing continuous latents refuse).
    :raises ValueError: naming a site whose support has no bijection from the reals, or a convention the model
        breaks (:func:`ppl_vae.conventions.latent_sites`).

    Example::

        >>> import torch
        >>> from ppl_vae.models import LinearGaussian
        >>> model = LinearGaussian(x_dim=5, z_dim=2)
        >>> x = model.marginal().sample((3,))
        >>> space = LatentSpace(model, x)
        >>> u = torch.randn(10, x.shape[0], space.dim)          # 10 particles per point
        >>> latents, log_det = space.constrain(u)               # {site: values}, log|dz/du|
        >>> latents["z"].shape, log_det.shape
        (torch.Size([10, 3, 2]), torch.Size([10, 3]))
        >>> log_prior, log_lik = space.log_joint(x, None, u)    # in u-space
        >>> log_prior.shape
        torch.Size([10, 3])
    """

    def __init__(self, model, x: torch.Tensor, idx: torch.Tensor | None = None):
        idx = default_idx(x, idx)
        n = min(2, x.shape[0])
        x, idx = x[:n], idx[:n]
        self.model = model
        self.sites = latent_sites(model, x, idx)
        self.nesting = max_plate_nesting(model, None, x, idx)
        self.enumerated = {k: s for k, s in self.sites.items() if s.enumerated}
        self.discrete = {k: s for k, s in self.sites.items() if s.discrete and not s.enumerated}
        with torch.no_grad():
            trace = trace_particles(model, x, idx, 1, self.nesting)
        self.blocks: list[LatentBlock] = []
        self.data_dim, self.data_size, self.subsampled = None, None, False
        offset = 0
        for name, site in self.sites.items():
            if site.discrete:
                continue
            node = trace.nodes[name]
            try:
                transform = biject_to(site.support)
            except NotImplementedError:
                raise ValueError(
                    f"Latent site {name!r} has support {support_name(site.support)}, which has no bijection from the "
                    "reals (torch.distributions.biject_to): the per-point tools cannot work with it"
                ) from None
            value = node["value"]
            uvalue = transform.inv(value)
            batch = value.shape[: value.dim() - len(site.event_shape)][1:]
            frames = tuple(f for f in node["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE)
            data = next(f for f in frames if f.name == DATA_PLATE)
            if self.data_dim is None:
                self.data_dim, self.data_size = data.dim, data.full_size or data.size
                self.subsampled = data.full_size is not None and data.full_size != data.size
            elif data.dim != self.data_dim:
                raise ValueError(f"Expected every latent site in pyro.plate({DATA_PLATE!r}) at one dim, but site "
                                 f"{name!r} has it at dim {data.dim} and an earlier site at {self.data_dim}")
            for f in frames:
                if f.name != DATA_PLATE and f.full_size is not None and f.full_size != f.size:
                    raise ValueError(f"Latent site {name!r} is in a subsampled plate {f.name!r} nested inside the "
                                     "data plate: only the data plate itself may be subsampled")
            position = len(batch) + data.dim
            batch = torch.Size(batch[:position] + (1,) + batch[position + 1:])
            uevent = uvalue.shape[1 + len(batch):]
            size = batch.numel() * uevent.numel()
            self.blocks.append(LatentBlock(name, site, transform, batch, position, uevent, offset, size, frames))
            offset += size
        self.dim = offset

    @classmethod
    def from_sites(cls, sites: dict[str, int]) -> LatentSpace:
        """A latent space of real-valued vector sites ``{name: size}`` in a data plate at ``dim=-1``, built without a
        model (for guides written against such a model: ``AmortizedNormal(784, {"z": 50})``). It has no
        :meth:`log_joint`.

        :raises ValueError: for an empty dict or a size below 1.
        """
        if not sites or any(int(v) < 1 for v in sites.values()):
            raise ValueError(f"Expected latent sites {{name: size >= 1}}, got {sites!r}")
        space = cls.__new__(cls)
        space.model, space.nesting = None, 1
        space.enumerated, space.discrete = {}, {}
        space.data_dim, space.data_size, space.subsampled = -1, None, False
        frame = CondIndepStackFrame(DATA_PLATE, -1, 1, 0)
        space.sites, space.blocks, offset = {}, [], 0
        support = constraints.independent(constraints.real, 1)
        for name, size in sites.items():
            size = int(size)
            site = LatentSite(name, torch.Size((size,)), torch.Size((size,)), support)
            space.sites[name] = site
            space.blocks.append(LatentBlock(name, site, biject_to(support), torch.Size((1,)), 0, torch.Size((size,)),
                                            offset, size, (frame,)))
            offset += size
        space.dim = offset
        return space

    # ---- the flat vector and the sites' values ----------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The continuous latent sites, in order."""
        return [b.name for b in self.blocks]

    def require_continuous(self, tool: str) -> None:
        """:raises ValueError: naming the discrete sites that are not enumerated, which ``tool`` cannot handle."""
        if self.discrete:
            name, site = next(iter(self.discrete.items()))
            raise ValueError(
                f"{tool} needs continuous latents, but latent site {name!r} is discrete ({support_name(site.support)}) "
                "and not marked for enumeration. Convention: mark discrete latent sites for parallel enumeration in "
                "the model (pyro.infer.config_enumerate, or infer={'enumerate': 'parallel'}) so they are summed out"
            )
        if not self.blocks:
            raise ValueError(f"{tool} needs at least one continuous latent site; the model has "
                             f"{list(self.sites) or 'none'}")

    def _natural(self, block: LatentBlock, piece: torch.Tensor, n: int) -> torch.Tensor:
        """``(S, N, prod)`` -> ``(S, *batch with N, *event)`` for one block."""
        s = piece.shape[0]
        shape = (s, n, *block.point_batch_shape, *block.unconstrained_event_shape)
        return piece.reshape(shape).movedim(1, 1 + block.data_position)

    def _flat(self, block: LatentBlock, value: torch.Tensor) -> torch.Tensor:
        """``(S, *batch with N, *event)`` -> ``(S, N, prod)``."""
        n = value.shape[1 + block.data_position]
        return value.movedim(1 + block.data_position, 1).reshape(value.shape[0], n, -1)

    def constrain(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Map ``u (S, N, D)`` to the sites' values.

        :returns: ``({site: (S, *batch, *event)}, log|det dz/du| (S, N))``.
        :raises ValueError: if ``u`` is not ``(S, N, D)`` with this space's ``D``.
        """
        if u.dim() != 3 or u.shape[-1] != self.dim:
            raise ValueError(f"Expected u of shape (S, N, {self.dim}), got {tuple(u.shape)}")
        s, n = u.shape[:2]
        latents, log_det = {}, u.new_zeros(s, n)
        for b in self.blocks:
            uu = self._natural(b, u[..., b.offset: b.offset + b.size], n)
            z = b.transform(uu)
            ld = b.transform.log_abs_det_jacobian(uu, z)
            ld = _sum_rightmost(ld, ld.dim() - (z.dim() - len(b.site.event_shape)))
            latents[b.name] = z
            log_det = log_det + ld.movedim(1 + b.data_position, 1).reshape(s, n, -1).sum(-1)
        return latents, log_det

    def unconstrain(self, latents: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Map the sites' values ``{site: (S, *batch, *event)}`` to ``u (S, N, D)``.

        :returns: ``(u, log|det dz/du| (S, N))`` (the Jacobian term at ``u``).
        :raises ValueError: if a continuous site is missing.
        """
        missing = [b.name for b in self.blocks if b.name not in latents]
        if missing:
            raise ValueError(f"Expected values for the latent sites {self.names}, missing {missing}")
        pieces, log_det = [], 0.0
        for b in self.blocks:
            z = latents[b.name]
            uu = b.transform.inv(z)
            ld = b.transform.log_abs_det_jacobian(uu, z)
            ld = _sum_rightmost(ld, ld.dim() - (z.dim() - len(b.site.event_shape)))
            pieces.append(self._flat(b, uu))
            s, n = pieces[-1].shape[:2]
            log_det = log_det + ld.movedim(1 + b.data_position, 1).reshape(s, n, -1).sum(-1)
        return torch.cat(pieces, -1), log_det

    def point_values(self, latents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The sites' values with the data dimension second: ``{site: (S, N, *point batch, *event)}``."""
        out = {}
        for b in self.blocks:
            z = latents[b.name]
            out[b.name] = z.movedim(1 + b.data_position, 1).reshape(
                z.shape[0], z.shape[1 + b.data_position], *b.point_batch_shape, *b.site.event_shape)
        return out

    def coordinate_names(self) -> list[str]:
        """One readable name per coordinate of ``u``: ``site[i, j]``, with the transform noted for constrained sites
        (e.g. ``scale[0] (unconstrained)``)."""
        names = []
        for b in self.blocks:
            shape = (*b.point_batch_shape, *b.unconstrained_event_shape)
            suffix = "" if support_name(b.site.support) == "real" else " (unconstrained)"
            for i in range(b.size):
                index = [int(k) for k in torch.unravel_index(torch.tensor(i), shape)] if shape else []
                names.append(f"{b.name}[{', '.join(map(str, index))}]{suffix}" if index else f"{b.name}{suffix}")
        return names

    # ---- plates, for guides that sample the model's sites -------------------------------------------------------
    def data_batch_shape(self, n: int) -> torch.Size:
        """The batch shape of a per-point distribution inside the data plate: ``(N, 1, ..., 1)`` so that ``N`` lands
        on the data plate's dim."""
        return torch.Size((n,) + (1,) * (-self.data_dim - 1))

    def plates(self, x: torch.Tensor, idx: torch.Tensor) -> dict[str, pyro.plate]:
        """The model's plates for a batch ``x`` with indices ``idx``: the data plate (subsampled by ``idx`` if the
        model's is) and the plates nested in it."""
        out = {}
        n = x.shape[0]
        for b in self.blocks:
            for f in b.frames:
                if f.name in out:
                    continue
                if f.name == DATA_PLATE:
                    out[f.name] = pyro.plate(f.name, self.data_size if self.subsampled else n, dim=f.dim,
                                             subsample=idx if self.subsampled else None)
                else:
                    out[f.name] = pyro.plate(f.name, f.size, dim=f.dim)
        return out

    def sample_sites(self, latents: dict[str, torch.Tensor], log_det_terms: dict[str, torch.Tensor],
                     plates: dict[str, pyro.plate]) -> None:
        """Inside a guide: sample every continuous site as ``Delta(value, log_density)`` within the model's plates
        (``plates``, from :meth:`plates`, created once per call of the guide).

        ``log_det_terms[site]`` is ``-log|det dz/du|`` of the site, batch-shaped (the guide's density of ``z`` is
        then that of its auxiliary ``u`` plus these terms, as in Pyro's ``AutoContinuous``).
        """
        for b in self.blocks:
            with contextlib.ExitStack() as stack:
                for f in b.frames:
                    stack.enter_context(plates[f.name])
                pyro.sample(b.name, pyro.distributions.Delta(latents[b.name], log_density=log_det_terms[b.name],
                                                             event_dim=len(b.site.event_shape)))

    def constrain_sites(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Like :meth:`constrain` for ``u (*sample, N, D)`` of any leading shape, returning per-site, batch-shaped
        ``-log|det dz/du|`` terms for :meth:`sample_sites`."""
        lead = u.shape[:-2]
        flat = u.reshape(-1, *u.shape[-2:])
        n = flat.shape[1]
        latents, terms = {}, {}
        for b in self.blocks:
            uu = self._natural(b, flat[..., b.offset: b.offset + b.size], n)
            z = b.transform(uu)
            ld = b.transform.log_abs_det_jacobian(uu, z)
            ld = _sum_rightmost(ld, ld.dim() - (z.dim() - len(b.site.event_shape)))
            latents[b.name] = z.reshape(*lead, *z.shape[1:])
            terms[b.name] = -ld.reshape(*lead, *ld.shape[1:])
        return latents, terms

    # ---- densities in u-space --------------------------------------------------------------------------------
    def log_joint(self, x: torch.Tensor, idx: torch.Tensor | None, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's density in u-space, per particle and point, split into prior and likelihood:
        ``log p(T(u)) + log|det J_T(u)|`` and ``log p(x | T(u))``, each ``(S, N)``; enumerated discrete sites are
        summed out of both; masked-out latent entries count with their own prior density (they affect nothing
        observed, so ``p(x)`` is unchanged and the density in u-space stays proper). Differentiable in ``u``.
        """
        idx = default_idx(x, idx)
        self._need_model("log_joint")
        latents, log_det = self.constrain(u)
        s, n = u.shape[:2]
        trace = trace_particles(self.model, x, idx, s, self.nesting, condition=latents, enumerate=bool(self.enumerated))
        names = [nm for nm, _ in sample_sites(trace)]
        latent = [*self.names, *self.enumerated]
        log_prior = point_log_density(trace, latent, self.nesting, s, n, complete=self.names)
        log_all = point_log_density(trace, names, self.nesting, s, n, complete=self.names)
        return log_prior + log_det, log_all - log_prior

    def sample_prior(self, x: torch.Tensor, idx: torch.Tensor | None, num_samples: int) -> torch.Tensor:
        """``u (S, N, D)`` drawn from the prior (ancestral sampling of the model; discrete sites drawn and dropped)."""
        idx = default_idx(x, idx)
        self._need_model("sample_prior")
        trace = trace_particles(self.model, x, idx, num_samples, self.nesting)
        u, _ = self.unconstrain({b.name: trace.nodes[b.name]["value"] for b in self.blocks})
        return u

    def sample_guide(self, guide, x: torch.Tensor, idx: torch.Tensor | None, num_samples: int,
                     nesting: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``u (S, N, D)`` drawn from ``guide`` and its density in u-space ``log q(T(u)) + log|det J_T(u)|``
        ``(S, N)`` (the guide's own density of what it sampled, so any guide works here)."""
        idx = default_idx(x, idx)
        nesting = self.nesting if nesting is None else nesting
        trace = trace_particles(guide, x, idx, num_samples, nesting)
        names = [n for n, _ in sample_sites(trace)]
        log_q = point_log_density(trace, names, nesting, num_samples, x.shape[0], complete=self.names)
        u, log_det = self.unconstrain({b.name: trace.nodes[b.name]["value"] for b in self.blocks})
        return u, log_q + log_det

    def guide_log_density(self, guide, x: torch.Tensor, idx: torch.Tensor | None, u: torch.Tensor,
                          nesting: int | None = None) -> torch.Tensor:
        """The guide's density at given points ``u (S, N, D)``: ``log q(T(u) | x) + log|det J_T(u)|`` ``(S, N)``.

        Guides of this library's latent-space families answer through their ``latent_log_prob``; any other guide is
        scored by conditioning it on ``T(u)``, which needs every transform it uses to be invertible.

        :raises ValueError: for a guide with auxiliary sites and no ``latent_log_prob``, or one that cannot score
            points it did not sample (planar and radial flows, pyro issue 2718).
        """
        idx = default_idx(x, idx)
        if hasattr(guide, "latent_log_prob") and getattr(guide, "space", None) is not None and \
                guide.space.dim == self.dim:
            try:
                return guide.latent_log_prob(x, idx, u)
            except KeyError as e:
                raise ValueError(_CANNOT_SCORE.format(guide=type(guide).__name__)) from e
        latents, log_det = self.constrain(u)
        s, n = u.shape[:2]
        nesting = self.nesting if nesting is None else nesting
        try:
            trace = trace_particles(guide, x, idx, s, nesting, condition=latents)
        except KeyError as e:
            raise ValueError(_CANNOT_SCORE.format(guide=type(guide).__name__)) from e
        aux = [nm for nm, site in sample_sites(trace) if is_auxiliary(site)]
        if aux:
            raise ValueError(f"Expected a guide that can score given latents, but {type(guide).__name__} samples the "
                             f"auxiliary sites {aux}; give it a latent_log_prob(x, idx, u) method")
        names = [nm for nm, _ in sample_sites(trace)]
        return point_log_density(trace, names, nesting, s, n, complete=self.names) + log_det

    def _need_model(self, what: str) -> None:
        if self.model is None:
            raise ValueError(f"This latent space was built from site sizes, without a model: it has no {what}; build it "
                             "with LatentSpace(model, x)")

    def per_point(self, site: dict, log_prob: torch.Tensor, num_samples: int, num_points: int) -> torch.Tensor:
        """A batch-shaped log density of one of the model's sites reduced to ``(S, N)``."""
        return per_point(site, log_prob, self.nesting + 1, num_samples, num_points)

    def __repr__(self) -> str:
        parts = [f"{b.name}: {tuple(b.site.point_shape)} {support_name(b.site.support)}" for b in self.blocks]
        extra = f", enumerated {list(self.enumerated)}" if self.enumerated else ""
        extra += f", discrete {list(self.discrete)}" if self.discrete else ""
        return f"LatentSpace(D={self.dim}; {'; '.join(parts)}{extra})"


_CANNOT_SCORE = ("{guide} cannot score latents it did not sample itself: planar and radial flows have no inverse "
                 "(pyro issue 2718). Use a guide whose transforms are invertible (affine autoregressive, affine "
                 "coupling, spline) for AIS from the guide, or start AIS from the prior")



def as_latent_space(space) -> LatentSpace:
    """``space`` itself, or a :meth:`LatentSpace.from_sites` space for a dict ``{site: size}``.

    :raises TypeError: for anything else.
    """
    if isinstance(space, LatentSpace):
        return space
    if isinstance(space, dict):
        return LatentSpace.from_sites(space)
    raise TypeError(f"Expected a LatentSpace (LatentSpace(model, x)) or a dict {{site: size}}, got {type(space).__name__}")
