"""The conventions every model/guide pair follows, and the tracing that checks them.

A **model** is a Pyro model function (or ``nn.Module`` whose ``forward`` is one) called as ``model(x, idx)``:

- ``x``: ``(N, ...)`` data tensor (any dtype: images, counts, category codes); ``idx``: ``(N,)`` ``long`` indices of
  those data points in their split (or ``None``, read as ``0..N-1``). The model may use ``idx`` (a known per-point
  noise level, an offset, a subsampled plate); every tool hands it the points' own indices.
- every per-data-point sample site lies inside ``pyro.plate("data", N)`` (named :data:`DATA_PLATE`), at any ``dim``,
  possibly with further plates nested inside it or a ``subsample=idx``;
- every latent site declares its non-batch dimensions as event dimensions (``.to_event()``), so that a leading
  plate of "particles" broadcasts through the model;
- observations are sample sites with ``obs=...``; there are no global latent sites (parameters are
  ``nn.Parameter`` s or ``pyro.param`` s, point estimates);
- continuous latent sites may have any support with a bijection from the reals (``biject_to(support)``: positive,
  simplex, intervals, ...) and any event shape; discrete latent sites are either sampled by the guide, or marked
  for parallel enumeration in the model (``pyro.infer.config_enumerate``), in which case the tools sum them out.

A **guide** takes the same arguments and samples exactly the model's latent sites (but the enumerated ones), with
the same shapes and inside the model's support, in the same ``data`` plate; it may sample auxiliary sites
(``infer={"is_auxiliary": True}``). It must broadcast over a leading particle dimension like the model.

The library never assumes site names: :func:`latent_sites` finds them by tracing and :func:`check_pair` runs the
pair exactly as the estimators do and names what is missing or mismatched.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import constraints

from .traces import DATA_PLATE, is_auxiliary, sample_sites, trace_particles

__all__ = ["DATA_PLATE", "LatentSite", "latent_sites", "check_pair", "max_plate_nesting", "default_idx",
           "support_name"]

CHECK_PARTICLES = 2  # the particle plate's size when a pair is checked: shapes that do not broadcast show up


@dataclass(frozen=True)
class LatentSite:
    """A latent sample site of a model.

    :ivar str name: the site's name.
    :ivar torch.Size event_shape: its event shape.
    :ivar torch.Size point_shape: the shape of one data point's value: the batch dimensions of the plates nested
        inside the data plate (size 1 where the site does not use them), then the event shape.
    :ivar support: the support of the model's distribution at the site.
    :ivar bool discrete: whether the support is discrete.
    :ivar bool enumerated: whether the model marks it for parallel enumeration (it is then summed out).
    """

    name: str
    event_shape: torch.Size
    point_shape: torch.Size = torch.Size()
    support: constraints.Constraint = constraints.real
    discrete: bool = False
    enumerated: bool = False

    @property
    def event_numel(self) -> int:
        return self.event_shape.numel()

    @property
    def point_numel(self) -> int:
        return self.point_shape.numel()


def default_idx(x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """``idx``, or ``0..N-1`` for ``x (N, ...)``; checked to be ``(N,)`` integers.

    :raises ValueError: if ``idx`` has the wrong shape or dtype.
    """
    n = x.shape[0]
    if idx is None:
        return torch.arange(n, device=x.device)
    idx = torch.as_tensor(idx, device=x.device)
    if idx.shape != (n,) or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"Expected idx to be a ({n},) integer tensor (one index per data point), got "
                         f"{tuple(idx.shape)} of {idx.dtype}")
    return idx.long()


def support_name(support) -> str:
    """A short, readable name of a constraint (``positive``, ``simplex``, ``independent(real, 1)``...)."""
    base, dims = support, 0
    while isinstance(base, constraints.independent):
        dims += base.reinterpreted_batch_ndims
        base = base.base_constraint
    name = type(base).__name__.lstrip("_")
    name = {"Real": "real", "GreaterThan": "positive" if getattr(base, "lower_bound", None) == 0 else
            f"greater_than({getattr(base, 'lower_bound', '?')})", "GreaterThanEq": "nonnegative" if
            getattr(base, "lower_bound", None) == 0 else f"greater_than_eq({getattr(base, 'lower_bound', '?')})",
            "Simplex": "simplex", "Boolean": "boolean", "IntegerInterval": "integer_interval",
            "IntegerGreaterThan": "integer_greater_than", "Interval": "interval", "HalfOpenInterval": "interval",
            "UnitInterval": "unit_interval", "LowerCholesky": "lower_cholesky",
            "PositiveDefinite": "positive_definite", "CorrCholesky": "corr_cholesky"}.get(name, name)
    return name


def _base_support(support):
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def max_plate_nesting(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None) -> int:
    """The number of batch dimensions used by the plates of ``model`` and ``guide`` (either may be ``None``), at
    least 1, found by tracing them once on ``(x, idx)``."""
    nesting = 1
    for fn in (guide, model):
        if fn is None:
            continue
        with torch.no_grad():
            trace = poutine.trace(fn).get_trace(x, idx)
        for site in trace.nodes.values():
            if site["type"] == "sample":
                nesting = max(nesting, max((-f.dim for f in site["cond_indep_stack"] if f.vectorized), default=0))
    return nesting


def _run(fn, who: str, x, idx, nesting: int):
    try:
        with torch.no_grad():
            return trace_particles(fn, x, idx, CHECK_PARTICLES, nesting)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        raise ValueError(
            f"The {who} failed when run as the estimators run it, on {x.shape[0]} data points inside a plate of "
            f"{CHECK_PARTICLES} particles at dim {-(nesting + 1)} ({type(e).__name__}: {e}). Convention: a {who} "
            "must broadcast over extra leading batch dimensions — declare non-batch dimensions with .to_event(), "
            "reshape with x.shape[:-k] or '...' instead of fixed sizes, and keep every per-point site inside "
            f"pyro.plate({DATA_PLATE!r})"
        ) from e


def _point_shape(site, nesting: int, n: int) -> torch.Size:
    """The shape of one point's value under the particle plate: batch dims without particle and data dims, event."""
    fn, value = site["fn"], site["value"]
    event = fn.event_shape
    batch = value.shape[: value.dim() - len(event)]
    total = nesting + 1
    if len(batch) > total:
        raise ValueError(
            f"Expected latent site {site['name']!r} to have at most {nesting} batch dimensions (its plates), but its "
            f"value has shape {tuple(value.shape)} with event shape {tuple(event)}: declare its non-batch dimensions "
            "as event dimensions with .to_event()"
        )
    batch = (1,) * (total - len(batch)) + tuple(batch)
    data = next(f for f in site["cond_indep_stack"] if f.name == DATA_PLATE)
    position = total + data.dim
    if batch[position] != n:
        raise ValueError(
            f"Expected latent site {site['name']!r} to have {n} values along the data plate's dim {data.dim} (one per "
            f"data point), got batch shape {tuple(batch[1:])}"
        )
    return torch.Size(batch[1:position] + batch[position + 1:]) + event


def latent_sites(model, x: torch.Tensor, idx: torch.Tensor | None = None) -> dict[str, LatentSite]:
    """Trace ``model(x, idx)`` (sampling from the prior, under a plate of particles as the estimators run it) and
    return its latent sites, in order.

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` indices or ``None`` (``0..N-1``).
    :returns: ``{name: LatentSite}``.
    :raises ValueError: naming the site and the convention: a site outside the data plate, batch dimensions that
        should be event dimensions, a model that does not broadcast over particles, no observed site.
    """
    idx = default_idx(x, idx)
    nesting = max_plate_nesting(model, None, x, idx)
    trace = _run(model, "model", x, idx, nesting)
    sites = {}
    for name, site in sample_sites(trace):
        if site["is_observed"]:
            continue
        if not any(f.name == DATA_PLATE for f in site["cond_indep_stack"]):
            raise ValueError(
                f"Latent site {name!r} is not inside pyro.plate({DATA_PLATE!r}); per-data-point tools need every "
                "latent site in the data plate (global latents are not supported: use pyro.param or nn.Parameter)"
            )
        support = site["fn"].support
        discrete = bool(getattr(support, "is_discrete", False))
        enumerated = discrete and site["infer"].get("enumerate") == "parallel"
        sites[name] = LatentSite(name, site["fn"].event_shape, _point_shape(site, nesting, x.shape[0]), support,
                                 discrete, enumerated)
    if not any(s["is_observed"] for _, s in sample_sites(trace)):
        raise ValueError("The model has no observed sample site (a pyro.sample with obs=x)")
    return sites


def _innermost(fn):
    """The distribution inside ``Independent`` / masked / expanded wrappers."""
    while True:
        inner = getattr(fn, "base_dist", None)
        if inner is None or isinstance(fn, dist.TransformedDistribution):
            return fn
        fn = inner


def _supports_compatible(guide_support, model_support) -> bool:
    """Whether a guide's support can lie inside the model's (checked by kind; values are checked separately)."""
    g, m = _base_support(guide_support), _base_support(model_support)
    if bool(getattr(g, "is_discrete", False)) != bool(getattr(m, "is_discrete", False)):
        return False
    if type(m) is type(constraints.real):
        return True
    return type(g) is not type(constraints.real)  # a constrained model support needs a constrained guide


def check_pair(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None) -> dict[str, LatentSite]:
    """Run ``model`` and ``guide`` exactly as the estimators do (on ``(x, idx)``, under a plate of particles) and check
    that the guide samples every latent site of the model that is not enumerated, and nothing else (but auxiliary
    sites), with the model's shapes, inside the model's support, in the data plate.

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` indices or ``None``.
    :returns: the model's latent sites (as :func:`latent_sites`).
    :raises ValueError: naming the missing, extra or mismatched sites, or the convention a model or guide breaks.
    """
    idx = default_idx(x, idx)
    expected = latent_sites(model, x, idx)
    nesting = max(max_plate_nesting(model, None, x, idx), _guide_nesting(guide, x, idx))
    model_trace = _run(model, "model", x, idx, nesting)
    guide_trace = _run(guide, "guide", x, idx, nesting)
    found = {n: s for n, s in sample_sites(guide_trace) if not s["is_observed"] and not is_auxiliary(s)}
    required = [s for s, site in expected.items() if not site.enumerated]
    missing = [s for s in required if s not in found]
    extra = [s for s in found if s not in expected]
    if missing or extra:
        enumerated = [s for s, site in expected.items() if site.enumerated]
        note = f"; enumerated in the model, so not needed in the guide: {enumerated}" if enumerated else ""
        raise ValueError(
            f"Guide sites do not match the model's latent sites: model has {list(expected)}, guide samples "
            f"{list(found)} (missing from the guide: {missing}; not in the model: {extra}){note}"
        )
    for name, gsite in found.items():
        msite = model_trace.nodes[name]
        want, got = tuple(msite["value"].shape), tuple(gsite["value"].shape)
        if got != want:
            raise ValueError(f"Model and guide shapes disagree at site {name!r}: guide {got[1:]} vs model {want[1:]} "
                             f"(per {x.shape[0]} points; the leading particle dimension left out)")
        if not any(f.name == DATA_PLATE for f in gsite["cond_indep_stack"]):
            raise ValueError(f"Guide site {name!r} is not inside pyro.plate({DATA_PLATE!r})")
        gs, ms = gsite["fn"].support, msite["fn"].support
        # a point mass or a transformed distribution (torch does not track the codomain of composed transforms):
        # only the values can be checked
        values_only = isinstance(_innermost(gsite["fn"]), (dist.Delta, torch.distributions.TransformedDistribution))
        if not (values_only or _supports_compatible(gs, ms)) or not bool(ms.check(gsite["value"]).all()):
            raise ValueError(
                f"Guide site {name!r} has support {support_name(gs)} but the model's is {support_name(ms)}: a guide "
                "must put its mass inside the model's support (e.g. LogNormal or Gamma for a positive site, Dirichlet "
                "for a simplex, or TransformedDistribution(Normal(...), biject_to(support)))"
            )
    return expected


def _guide_nesting(guide, x, idx) -> int:
    try:
        return max_plate_nesting(None, guide, x, idx)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        raise ValueError(f"The guide failed on {x.shape[0]} data points ({type(e).__name__}: {e})") from e

