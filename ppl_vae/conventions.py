"""The conventions every model/guide pair follows, and the tracing that checks them.

A **model** is a Pyro model function (or ``nn.Module`` whose ``forward`` is one) called as ``model(x, idx)``:

- ``x``: ``(N, ...)`` data tensor; ``idx``: ``(N,)`` ``long`` indices of those data points in their split
  (or ``None``). The model may ignore ``idx``; per-datapoint guides use it.
- all per-data-point sample sites lie inside ``pyro.plate("data", N)`` (named :data:`DATA_PLATE`);
- every latent site declares its non-batch dimensions as event dimensions (``.to_event(1)``), so that extra
  leading batch dimensions (sample "particles") broadcast through the model;
- the observations are sample sites with ``obs=x`` (or a function of ``x``);
- no global latent sites: parameters are ``nn.Parameter`` s or ``pyro.param`` s (point estimates).

A **guide** takes the same arguments and samples exactly the model's latent sites, with the same shapes,
inside the same ``data`` plate.

The library never assumes site names: :func:`latent_sites` finds them by tracing and :func:`check_pair`
names what is missing or mismatched.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

__all__ = ["DATA_PLATE", "LatentSite", "latent_sites", "vector_site_sizes", "check_pair", "max_plate_nesting"]

DATA_PLATE = "data"


@dataclass(frozen=True)
class LatentSite:
    """A latent sample site: its ``name``, ``event_shape`` and whether its support is discrete."""

    name: str
    event_shape: torch.Size
    discrete: bool = False

    @property
    def event_numel(self) -> int:
        n = 1
        for s in self.event_shape:
            n *= s
        return n


def _in_data_plate(site) -> bool:
    return any(f.name == DATA_PLATE for f in site["cond_indep_stack"])


def _trace(fn, *args, **kwargs):
    with torch.no_grad():
        return prune_subsample_sites(poutine.trace(fn).get_trace(*args, **kwargs))


def latent_sites(model, x: torch.Tensor, idx: torch.Tensor | None = None) -> dict[str, LatentSite]:
    """Trace ``model(x, idx)`` (sampling from the prior) and return its latent sites, in order.

    :raises ValueError: if a site is outside the ``data`` plate or its batch shape is not ``(N,)``.
    """
    trace = _trace(model, x, idx)
    n = x.shape[0]
    sites = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if not _in_data_plate(site):
            raise ValueError(
                f"Latent site {name!r} is not inside pyro.plate({DATA_PLATE!r}); per-data-point tools need every "
                "latent site in the data plate (global latents are not supported: use pyro.param or nn.Parameter)"
            )
        batch = site["fn"].batch_shape
        if tuple(batch)[-1:] != (n,) or any(s != 1 for s in batch[:-1]):
            raise ValueError(
                f"Latent site {name!r} has batch shape {tuple(batch)}, expected ({n},): declare its non-batch "
                "dimensions as event dimensions with .to_event()"
            )
        sites[name] = LatentSite(name, site["fn"].event_shape, bool(getattr(site["fn"], "has_enumerate_support", False)))
    observed = [name for name, s in trace.nodes.items() if s["type"] == "sample" and s["is_observed"]]
    if not observed:
        raise ValueError("The model has no observed sample site (a pyro.sample with obs=x)")
    return sites


def vector_site_sizes(model, x: torch.Tensor, who: str) -> dict[str, int]:
    """``{site: event size}`` of the model's latent sites, all of which must be continuous with ``event_dim=1``
    (what the amortized guides can encode); ``who`` names the guide in the error."""
    sites = latent_sites(model, x)
    for s in sites.values():
        if s.discrete or len(s.event_shape) != 1:
            raise ValueError(f"{who} needs continuous sites of event_dim 1; site {s.name!r} is not")
    return {n: s.event_numel for n, s in sites.items()}


def check_pair(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None) -> dict[str, LatentSite]:
    """Check that ``guide`` samples exactly the latent sites of ``model`` with matching shapes.

    :returns: the model's latent sites (as :func:`latent_sites`).
    :raises ValueError: naming the missing, extra or mismatched sites.
    """
    expected = latent_sites(model, x, idx)
    guide_trace = _trace(guide, x, idx)
    found = {
        name: site for name, site in guide_trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]
    }
    missing = [s for s in expected if s not in found]
    extra = [s for s in found if s not in expected]
    if missing or extra:
        raise ValueError(
            f"Guide sites do not match the model's latent sites: model has {list(expected)}, guide samples "
            f"{list(found)} (missing from the guide: {missing}; not in the model: {extra})"
        )
    n = x.shape[0]
    for name, site in expected.items():
        shape = tuple(found[name]["value"].shape)
        want = (n, *site.event_shape)
        if shape != want:
            raise ValueError(f"Model and guide shapes disagree at site {name!r}: guide {shape} vs model {want}")
        if not _in_data_plate(found[name]):
            raise ValueError(f"Guide site {name!r} is not inside pyro.plate({DATA_PLATE!r})")
    return expected


def max_plate_nesting(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None) -> int:
    """The number of batch dimensions used by plates in ``model`` and ``guide`` (at least 1)."""
    nesting = 1
    for fn in (guide, model):
        trace = _trace(fn, x, idx)
        for site in trace.nodes.values():
            if site["type"] == "sample":
                nesting = max(nesting, max((-f.dim for f in site["cond_indep_stack"] if f.vectorized), default=0))
    return nesting
