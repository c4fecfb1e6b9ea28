"""Closed-form KL divergences of the latent sites, per latent dimension: the KL term of the ELBO broken down by
dimension (used by the free-bits objective and the posterior-collapse diagnostics)."""
from __future__ import annotations

import torch
from torch.distributions import Independent, Normal, kl_divergence

__all__ = ["site_kl_per_dimension", "latent_kl_terms"]


def _strip(fn) -> tuple[object, int]:
    """Strip ``Independent`` wrappers: ``(base distribution, number of reinterpreted dimensions)``."""
    event_dims = 0
    while isinstance(fn, Independent):
        event_dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, event_dims


def site_kl_per_dimension(name: str, guide_fn, model_fn) -> torch.Tensor:
    """Analytic :math:`\\mathrm{KL}(q \\| p)` of one latent site, element by element of its event:
    a ``(*batch_shape, D)`` tensor with ``D`` the flattened event size.

    :param str name: the site's name (for errors).
    :param guide_fn: the guide's distribution at the site,
        ``Normal(...).to_event(k)``.
    :param model_fn: the model's (prior) distribution there, also Normal.
    :raises ValueError: if either is not a (possibly ``to_event``) Normal, or their event shapes differ.
    """
    q, q_dims = _strip(guide_fn)
    p, p_dims = _strip(model_fn)
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
    kl = kl_divergence(q, p)
    if q_dims == 0:
        return kl.unsqueeze(-1)
    return kl.reshape(*kl.shape[: kl.dim() - q_dims], -1)


def _weights(site, batch_shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """The site's per-element weight (its ``scale`` times its ``mask``), broadcast to ``batch_shape``."""
    w = like.new_ones(batch_shape) * site["scale"]
    mask = site["mask"]
    if mask is False:
        return torch.zeros_like(w)
    if isinstance(mask, torch.Tensor):
        w = w * mask.to(w.dtype)
    return w


def latent_kl_terms(model_trace, guide_trace):
    """``[(name, kl (*batch, D), weight (*batch))]`` for every latent site of ``guide_trace``, with the model's
    site of the same name as the prior (used by :class:`~ppl_vae.objectives.free_bits.FreeBitsELBO`).

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
        kl = site_kl_per_dimension(name, site["fn"], model_site["fn"])
        terms.append((name, kl, _weights(site, kl.shape[:-1], kl)))
    if not terms:
        raise ValueError("Expected the guide to sample at least one latent site, but it samples none")
    return terms


