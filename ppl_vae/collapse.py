"""Posterior-collapse diagnostics: the KL of every latent dimension and the active units.

A latent dimension has *collapsed* when the guide ignores the data there: :math:`q(z_d|x) \\approx p(z_d)` for
every :math:`x`, so its KL is near zero and the decoder gets no information through it.

- :func:`kl_per_dimension`: :math:`\\frac1N\\sum_n \\mathrm{KL}(q(z_d|x_n) \\| p(z_d))`, analytic, per dimension;
- :func:`active_units` (Burda et al. 2015, §5.2): dimension :math:`u` is active when
  :math:`A_u = \\mathrm{Cov}_x\\big(\\mathbb{E}_{q(u|x)}[u]\\big) > 0.01`;
- :func:`plot_collapse`: the KL per dimension, sorted, and its history over epochs.

Latent dimensions are numbered by concatenating the latent sites, flattened, in the order the guide samples
them.

References:

1. Burda, Grosse, Salakhutdinov (2015), *Importance Weighted Autoencoders*, section 5.2.
2. Bowman et al. (2016), *Generating Sentences from a Continuous Space* (KL vanishing).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Independent, Normal, kl_divergence

from ppl_vae.conventions import max_plate_nesting
from ppl_vae.estimators.log_weights import traced_pair

__all__ = ["ActiveUnits", "site_kl_per_dimension", "latent_kl_terms", "kl_per_dimension", "active_units", "plot_collapse"]


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

    :param str name: the site's name (for errors). :param guide_fn: the guide's distribution at the site,
        ``Normal(...).to_event(k)``. :param model_fn: the model's (prior) distribution there, also Normal.
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
    site of the same name as the prior (used by :class:`~ppl_vae.free_bits.FreeBitsELBO`).

    :raises ValueError: if a guide site is missing from the model, or a site is not Normal-with-Normal-prior.
    """
    terms = []
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if name not in model_trace.nodes:
            model_latents = [n for n, s in model_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
            raise ValueError(f"Expected guide site {name!r} among the model's latent sites {model_latents}, but it is not")
        kl = site_kl_per_dimension(name, site["fn"], model_trace.nodes[name]["fn"])
        terms.append((name, kl, _weights(site, kl.shape[:-1], kl)))
    if not terms:
        raise ValueError("Expected the guide to sample at least one latent site, but it samples none")
    return terms


@torch.no_grad()
def kl_per_dimension(model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, *,
                     chunk_size: int = 1000) -> torch.Tensor:
    """Mean analytic KL of every latent dimension over the data points: ``(D,)`` nats.

    .. math:: \\mathrm{KL}_d = \\frac1N \\sum_{n=1}^N \\mathrm{KL}\\big(q(z_d | x_n) \\,\\|\\, p(z_d)\\big)

    Sums to the mean KL term of the ELBO (per data point). Needs a Normal guide and a Normal prior at every
    latent site (:func:`site_kl_per_dimension`).

    :param x: ``(N, ...)`` data. :param idx: ``(N,)`` indices (default ``arange(N)``, for per-datapoint guides).
    :param int chunk_size: data points per traced pass.
    """
    idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    nesting = max_plate_nesting(model, guide, x[:1], idx[:1])
    total = None
    for a in range(0, x.shape[0], chunk_size):
        model_trace, guide_trace, _ = traced_pair(model, guide, x[a : a + chunk_size], idx[a : a + chunk_size], 1, nesting)
        parts = [(kl * w.unsqueeze(-1)).reshape(-1, kl.shape[-1]).sum(0) for _, kl, w in latent_kl_terms(model_trace, guide_trace)]
        chunk = torch.cat(parts)
        total = chunk if total is None else total + chunk
    return total / x.shape[0]


class ActiveUnits(NamedTuple):
    """``count``: the number of active units; ``variances``: ``(D,)`` :math:`A_u` of every dimension."""

    count: int
    variances: torch.Tensor


@torch.no_grad()
def active_units(guide, x: torch.Tensor, idx: torch.Tensor | None = None, *, threshold: float = 0.01,
                 chunk_size: int = 1000) -> ActiveUnits:
    """Active units of Burda et al. (2015): the variance over the data of each latent's posterior mean,

    .. math:: A_u = \\mathrm{Cov}_x\\big(\\mathbb{E}_{q(u|x)}[u]\\big), \\qquad u \\text{ active} \\iff A_u > \\text{threshold}

    (the sample variance over the ``N`` points). Works for any guide whose site distributions have a closed-form
    ``mean`` (Normal, Delta, multivariate Normal).

    :param x: ``(N, ...)`` data, ``N >= 2``. :param idx: ``(N,)`` or ``None`` (``arange(N)``).
    :returns: :class:`ActiveUnits` ``(count, variances (D,))``.
    :raises ValueError: if a guide site has no closed-form mean.
    """
    if x.shape[0] < 2:
        raise ValueError(f"Expected at least 2 data points to compute a variance, got x of shape {tuple(x.shape)}")
    if threshold < 0:
        raise ValueError(f"Expected threshold >= 0, got {threshold}")
    idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    chunks = []
    for a in range(0, x.shape[0], chunk_size):
        xc, ic = x[a : a + chunk_size], idx[a : a + chunk_size]
        trace = prune_subsample_sites(poutine.trace(guide).get_trace(xc, ic))
        means = []
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            try:
                mean = site["fn"].mean
            except NotImplementedError:
                raise ValueError(
                    f"Expected the guide's distribution at site {name!r} to have a closed-form mean, but "
                    f"{type(site['fn']).__name__} has none (use ppl_vae.plots.guide_means for a Monte Carlo mean)"
                ) from None
            means.append(mean.expand(site["value"].shape).reshape(xc.shape[0], -1))
        chunks.append(torch.cat(means, -1))
    variances = torch.cat(chunks).var(0)
    return ActiveUnits(int((variances > threshold).sum()), variances)


def plot_collapse(kl, path, title: str | None = None):
    """Bar chart of the KL per latent dimension, sorted; with a history, also a heatmap over epochs.

    :param kl: ``(D,)`` KL per dimension (:func:`kl_per_dimension`), or ``(epochs, D)`` its history (the bars
        show the last epoch; the heatmap's rows are the dimensions in the bars' order).
    :param path: where to save the PNG. :returns: the path.
    """
    from ppl_vae.plots import save_figure  # matplotlib only when drawing

    import matplotlib.pyplot as plt

    kl = torch.as_tensor(kl, dtype=torch.float64).cpu()
    if kl.dim() not in (1, 2) or kl.shape[-1] == 0:
        raise ValueError(f"Expected kl of shape (D,) or (epochs, D), got shape {tuple(kl.shape)}")
    last = kl if kl.dim() == 1 else kl[-1]
    order = torch.argsort(last, descending=True)
    d = last.shape[0]
    if kl.dim() == 1:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.18 * d + 2), 3.5))
        axes = [ax]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.36 * d + 4), 3.8))
    ax = axes[0]
    ax.bar(range(d), last[order].numpy(), color="tab:blue")
    if d <= 40:
        ax.set_xticks(range(d), [str(int(i)) for i in order], fontsize=7, rotation=90)
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("KL(q(z_d|x) || p(z_d)), nats")
    ax.set_title(f"KL per dimension (total {last.sum():.2f} nats)")
    if kl.dim() == 2:
        im = axes[1].imshow(kl[:, order].T.numpy(), aspect="auto", origin="upper", cmap="viridis",
                            extent=(0.5, kl.shape[0] + 0.5, d - 0.5, -0.5))
        fig.colorbar(im, ax=axes[1], label="nats")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("latent dimension (rank at the end)")
        axes[1].set_title("KL per dimension during training")
    if title:
        fig.suptitle(title, y=1.03)
    return save_figure(fig, path)
