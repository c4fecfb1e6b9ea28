"""Tracing a model or guide under a plate of particles, and its log densities reduced to one value per data point.

Every per-point tool of the library runs a pair the same way: the model or guide is called on ``(x, idx)`` inside an
outer ``pyro.plate`` of ``S`` particles (left of every plate the pair uses), so one vectorized pass draws ``S``
samples for each of the ``N`` data points. Each site's log density, with its mask but *without* its scale (a
subsampled plate's ``N/B`` or a ``poutine.scale`` factor never enters a per-point bound), is then summed over
every dimension but the particle and data-plate dimensions: an ``(S, N)`` tensor.

Discrete latent sites that the model marks for parallel enumeration (``infer={"enumerate": "parallel"}``, e.g.
through :func:`pyro.infer.config_enumerate`) are summed out exactly, per data point, with Pyro's tensor
contraction (:func:`pyro.ops.contract.contract_to_tensor`): the result is the density of the remaining sites.
"""
from __future__ import annotations

from collections import OrderedDict

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import pack, unpack
from pyro.poutine.util import prune_subsample_sites

__all__ = ["DATA_PLATE", "PARTICLE_PLATE", "vectorize_particles", "trace_particles", "sample_sites", "latent_names",
           "is_auxiliary", "site_log_prob", "per_point", "point_log_density"]

DATA_PLATE = "data"
"""The name of the plate over data points (the convention every pair follows)."""

PARTICLE_PLATE = "_ppl_vae_particles"


def vectorize_particles(fn, num_samples: int, dim: int):
    """``fn`` run inside ``pyro.plate(PARTICLE_PLATE, num_samples, dim=dim)``."""

    def wrapped(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, num_samples, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def trace_particles(fn, x: torch.Tensor, idx, num_samples: int, nesting: int, *, condition: dict | None = None,
                    replay=None, enumerate: bool = False):
    """The trace of ``fn(x, idx)`` under a plate of ``num_samples`` particles at ``dim = -(nesting + 1)``.

    :param int nesting: the plates' nesting of the pair (the particle plate goes left of all of them).
    :param dict condition: site values to condition on (``poutine.condition``), shapes ``(S, ...)``.
    :param replay: a trace whose sample values are replayed (``poutine.replay``).
    :param bool enumerate: enumerate in parallel the sites marked for enumeration, at dims left of the particles.
    :returns: the trace, subsample sites pruned.
    """
    run = vectorize_particles(fn, num_samples, -(nesting + 1))
    if condition is not None:
        run = poutine.condition(run, data=condition)
    if replay is not None:
        run = poutine.replay(run, trace=replay)
    if enumerate:
        run = poutine.enum(run, first_available_dim=-(nesting + 2))
    return prune_subsample_sites(poutine.trace(run).get_trace(x, idx))


def is_auxiliary(site) -> bool:
    """Whether a guide's sample site is auxiliary (``infer={"is_auxiliary": True}``): not a latent of the model."""
    return bool((site.get("infer") or {}).get("is_auxiliary", False))


def sample_sites(trace) -> list[tuple[str, dict]]:
    return [(name, s) for name, s in trace.nodes.items() if s["type"] == "sample"]


def latent_names(trace) -> list[str]:
    """The non-observed, non-auxiliary sample sites of ``trace``, in order."""
    return [n for n, s in sample_sites(trace) if not s["is_observed"] and not is_auxiliary(s)]


def site_log_prob(site) -> torch.Tensor:
    """The site's log density with its mask applied but *not* its scale."""
    return scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])


def _data_dim(site) -> int:
    dims = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not dims:
        raise ValueError(
            f"Expected site {site['name']!r} inside pyro.plate({DATA_PLATE!r}), but it is outside: per-data-point "
            "tools need every sample site of the model and guide in the data plate (parameters are nn.Parameters "
            "or pyro.params, not global latent sites)"
        )
    return dims[0]


def per_point(site, log_prob: torch.Tensor, total_dims: int, num_samples: int, num_points: int) -> torch.Tensor:
    """Reduce a site's batch-shaped log density to ``(num_samples, num_points)`` by summing all other dims.

    :param int total_dims: the number of batch dimensions under the particle plate (``nesting + 1``).
    :raises ValueError: if the site is not in the data plate, or has more batch dimensions than its plates.
    """
    data_dim = _data_dim(site)
    if log_prob.dim() > total_dims:
        raise ValueError(
            f"Expected site {site['name']!r} to have at most {total_dims - 1} batch dimensions (its plates), but its "
            f"log_prob has shape {tuple(log_prob.shape)}: declare the site's non-batch dimensions as event "
            "dimensions with .to_event()"
        )
    lp = log_prob.reshape((1,) * (total_dims - log_prob.dim()) + tuple(log_prob.shape))
    keep = {0, total_dims + data_dim}
    other = [d for d in range(total_dims) if d not in keep]
    if other:
        lp = lp.sum(other, keepdim=True)
    return lp.reshape(lp.shape[0], lp.shape[total_dims + data_dim]).expand(num_samples, num_points)


def _has_enumeration(trace) -> bool:
    return any(s["infer"].get("_enumerate_dim") is not None for _, s in sample_sites(trace))


def point_log_density(trace, names, nesting: int, num_samples: int, num_points: int) -> torch.Tensor:
    """The log density of the sample sites ``names`` of ``trace``, per particle and data point: ``(S, N)``.

    Enumerated sites of the trace (``poutine.enum``) among ``names`` are summed out per data point; the result is
    then the marginal density of the other sites.
    """
    names = set(names)
    sites = [(n, s) for n, s in sample_sites(trace) if n in names]
    total = nesting + 1
    if not _has_enumeration(trace):
        out = 0.0
        for _, site in sites:
            out = out + per_point(site, site_log_prob(site), total, num_samples, num_points)
        if isinstance(out, float):
            return torch.zeros(num_samples, num_points)
        return out
    trace.symbolize_dims()
    tree = OrderedDict()
    for _, site in sites:
        _data_dim(site)
        ordinal = frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        tree.setdefault(ordinal, []).append(pack(site_log_prob(site), site["infer"]["_dim_to_symbol"]))
    enum_symbols = set(trace.symbol_to_dim) - set(trace.plate_to_symbol.values())
    target = frozenset(trace.plate_to_symbol[p] for p in (PARTICLE_PLATE, DATA_PLATE) if p in trace.plate_to_symbol)
    result = unpack(contract_to_tensor(tree, enum_symbols, target_ordinal=target), trace.symbol_to_dim)
    data_dim = next(f.dim for _, s in sites for f in s["cond_indep_stack"] if f.name == DATA_PLATE)
    lp = result.reshape((1,) * (total - result.dim()) + tuple(result.shape))
    lp = lp.reshape(lp.shape[0], lp.shape[total + data_dim])
    return lp.expand(num_samples, num_points)
