"""Closed-form KL divergences of the latent sites, per latent dimension: the KL term of the ELBO broken down by
dimension (used by the free-bits objective and the posterior-collapse diagnostics).

Masks are honoured wherever Pyro puts them: a masked distribution (``Normal(...).mask(m).to_event(1)``, as in
Pyro's deep Markov model, or ``Normal(...).to_event(1).mask(m)``) and a site's ``poutine.mask``. A masked-out
element contributes no KL, as it contributes no log density to the ELBO.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from pyro.distributions import MaskedDistribution
from torch.distributions import Independent, Normal, kl_divergence

__all__ = ["site_kl_per_dimension", "latent_kl_terms", "LatentKL"]


def _unwrap(fn) -> tuple[object, int, torch.Tensor | bool | None]:
    """Strip ``Independent`` and ``MaskedDistribution`` wrappers: ``(base distribution, number of reinterpreted
    dimensions, mask)``; the mask is ``None`` (no mask), ``False`` (all masked out) or a boolean tensor that
    broadcasts against the base distribution's batch shape."""
    if isinstance(fn, Independent):
        base, event_dims, mask = _unwrap(fn.base_dist)
        return base, event_dims + fn.reinterpreted_batch_ndims, mask
    if isinstance(fn, MaskedDistribution):
        base, event_dims, inner = _unwrap(fn.base_dist)
        mask = fn._mask
        if mask is True:
            return base, event_dims, inner
        if mask is False or inner is False:
            return base, event_dims, False
        mask = mask.reshape(*mask.shape, *(1,) * event_dims)  # a mask of this level's batch shape
        return base, event_dims, mask if inner is None else mask & inner
    return fn, 0, None


def _same_mask(a, b) -> bool:
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return a is b or (a is None and b is None)
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        return False
    return torch.equal(a.expand(shape), b.expand(shape))


def site_kl_per_dimension(name: str, guide_fn, model_fn) -> torch.Tensor:
    """Analytic :math:`\\mathrm{KL}(q \\| p)` of one latent site, element by element of its event:
    a ``(*batch_shape, D)`` tensor with ``D`` the flattened event size; masked-out elements are 0.

    :param str name: the site's name (for errors).
    :param guide_fn: the guide's distribution at the site, ``Normal(...).to_event(k)``, possibly masked.
    :param model_fn: the model's (prior) distribution there, also Normal, with the same mask.
    :raises ValueError: if either is not a (possibly ``to_event``, possibly masked) Normal, their event shapes
        differ, or they are masked differently (the ELBO term is then not a KL).
    """
    q, q_dims, q_mask = _unwrap(guide_fn)
    p, p_dims, p_mask = _unwrap(model_fn)
    if not (isinstance(q, Normal) and isinstance(p, Normal)):
        raise ValueError(
            f"Expected a Normal guide and a Normal prior at latent site {name!r} for a per-dimension KL, but got "
            f"guide {type(guide_fn).__name__} (base {type(q).__name__}) and prior {type(model_fn).__name__} "
            f"(base {type(p).__name__})"
        )
    if q_dims != p_dims or guide_fn.event_shape != model_fn.event_shape:
        raise ValueError(
            f"Expected the guide and prior at site {name!r} to have the same event shape, but got "
            f"{tuple(guide_fn.event_shape)} and {tuple(model_fn.event_shape)}"
        )
    if not _same_mask(q_mask, p_mask):
        raise ValueError(
            f"Expected the guide and prior at site {name!r} to be masked alike (.mask(m) with the same m), but they "
            "are not: the ELBO's term there is then not a KL divergence"
        )
    kl = kl_divergence(q, p)
    if q_mask is False:
        kl = torch.zeros_like(kl)
    elif q_mask is not None:
        kl = kl.masked_fill(~q_mask.expand(kl.shape), 0.0)
    if q_dims == 0:
        return kl.unsqueeze(-1)
    return kl.reshape(*kl.shape[: kl.dim() - q_dims], -1)


def _site_weights(site, batch_shape: torch.Size, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, mask)`` of the site (its ``scale``, its ``poutine.mask``), each broadcast to ``batch_shape``."""
    scale = like.new_ones(batch_shape) * site["scale"]
    mask = site["mask"]
    if mask is False:
        mask = torch.zeros_like(scale)
    elif isinstance(mask, torch.Tensor):
        mask = like.new_ones(batch_shape) * mask.to(like.dtype)
    else:
        mask = like.new_ones(batch_shape)
    return scale, mask


class LatentKL(NamedTuple):
    """One latent site's KL terms: ``kl (*batch, D)`` the analytic KL of every element (masked elements 0),
    ``scale (*batch)`` the site's scale (plate subsampling, ``poutine.scale``, KL weights) and ``mask (*batch, D)``
    which elements count (the distribution's and the site's masks, as 0/1)."""

    name: str
    kl: torch.Tensor
    scale: torch.Tensor
    mask: torch.Tensor


def latent_kl_terms(model_trace, guide_trace) -> list[LatentKL]:
    """One :class:`LatentKL` for every latent site of ``guide_trace``, with the model's site of the same name as
    the prior (used by :class:`~ppl_vae.objectives.free_bits.FreeBitsELBO` and
    :func:`~ppl_vae.diagnostics.collapse.kl_per_dimension`).

    :raises ValueError: if a guide site is missing from the model, or a site is not Normal-with-Normal-prior.
    """
    terms = []
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if name not in model_trace.nodes:
            model_latents = [n for n, s in model_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
            raise ValueError(f"Expected guide site {name!r} among the model's latent sites {model_latents}, but it is not")
        model_site = model_trace.nodes[name]
        enumerated = [n for n, s in model_trace.nodes.items() if s["type"] == "sample"
                      and s["infer"].get("_enumerate_dim") is not None]
        if enumerated and model_site["infer"].get("_dim_to_id"):
            raise ValueError(f"Expected a prior at latent site {name!r} that does not depend on discrete sites, but it "
                             f"depends on the enumerated sites {enumerated}: its marginal prior is a mixture, with no "
                             "closed-form KL per dimension")
        fn = site["fn"]
        kl = site_kl_per_dimension(name, fn, model_trace.nodes[name]["fn"])
        scale, site_mask = _site_weights(site, kl.shape[:-1], kl)
        _, _, dist_mask = _unwrap(fn)
        mask = site_mask.unsqueeze(-1).expand(kl.shape)
        if dist_mask is False:
            mask = torch.zeros_like(mask)
        elif dist_mask is not None:
            event = fn.event_shape
            full = dist_mask.expand(*kl.shape[:-1], *event) if event else dist_mask.expand(kl.shape[:-1])
            mask = mask * full.reshape(kl.shape).to(kl.dtype)
        terms.append(LatentKL(name, kl, scale, mask))
    if not terms:
        raise ValueError("Expected the guide to sample at least one latent site, but it samples none")
    return terms
