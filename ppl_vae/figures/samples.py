"""Figures of a trained run: prior samples, reconstructions, the latent space coloured by label, a mixture's density.

They work for any model that can be sampled: the model is run with its observed sites released
(``poutine.uncondition``) — from the prior, or with its latent sites conditioned on a guide's mean in the latent
space — and each observed site's mean (e.g. pixel probabilities) is drawn; observations with a square number of
values per point are shown as images. Every function takes what it draws and a path, saves a PNG and returns the
path.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from pyro import poutine

from ppl_vae.conventions import default_idx
from ppl_vae.gap.local_fit import latent_moments
from ppl_vae.latent_space import LatentSpace

from .figure import image_grid, new_figure, save_figure

__all__ = ["plot_prior_samples", "plot_reconstructions", "plot_latent_space", "observation_means", "as_images", "guide_means",
           "plot_mixture_density", "FASHION_MNIST_CLASSES"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")


@torch.no_grad()
def observation_means(model, x: torch.Tensor, idx: torch.Tensor | None = None,
                      latents: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The mean of the model's (first) observed site, ``(N, values per point)``, with the observations released:
    latents from the prior, or conditioned on ``latents`` ``{site: (*batch, *event)}`` (the model's shapes for ``x``).

    :param x: ``(N, ...)`` data, for the shapes (and whatever the model reads from it besides the observation).
    :raises ValueError: if the model has no observed site.
    """
    idx = default_idx(x, idx)
    run = poutine.uncondition(model)
    if latents:
        run = poutine.condition(run, data=latents)
    trace = poutine.trace(run).get_trace(x, idx)
    for site in trace.nodes.values():
        if site["type"] == "sample" and (site.get("infer") or {}).get("was_observed"):
            try:
                mean = site["fn"].mean
            except NotImplementedError:
                mean = site["value"]
            return mean.expand(site["value"].shape).reshape(x.shape[0], -1)
    raise ValueError("Expected the model to have an observed site (a pyro.sample with obs=...), found none")


def as_images(values: torch.Tensor, what: str) -> tuple[torch.Tensor, int]:
    """``values (..., D)`` as square images, and their side ``sqrt(D)``; ``what`` names them in the message.

    :raises ValueError: if the values per point are not a square number.
    """
    side = math.isqrt(values.shape[-1])
    if side * side != values.shape[-1]:
        raise ValueError(f"Expected observations with a square number of values per point to draw as images, got "
                         f"{values.shape[-1]} for the {what}")
    lo, hi = values.min(), values.max()
    if lo < 0 or hi > 1:
        values = (values - lo) / (hi - lo).clamp_min(1e-12)
    return values.cpu(), side


@torch.no_grad()
def plot_prior_samples(model, path, x: torch.Tensor | None = None, num: int = 64, seed: int = 0) -> Path:
    """Observation means of ``num`` draws ``z ~ p(z)`` (pixel probabilities for a Bernoulli likelihood).

    :param x: ``(M, ...)`` example data giving the model its shapes (``M >= 1``; rows are reused). A model with its
        own ``sample(num, probs=True)`` (the zoo's decoders) is sampled through it.
    :raises ValueError: if the model has no ``sample(num)`` method and no ``x`` is given.
    """
    torch.manual_seed(seed)
    if hasattr(model, "sample"):  # the zoo's decoders (a VAE-GAN's likelihood is in feature space, not pixels)
        images, side = as_images(model.sample(num, probs=True).reshape(num, -1), "prior samples")
    elif x is None:
        raise ValueError("Expected example data x to sample a model that has no sample(num) method")
    else:
        reps = x[torch.arange(num, device=x.device) % x.shape[0]]
        images, side = as_images(observation_means(model, reps), "prior samples")
    fig, ax = new_figure((6, 6))
    ax.imshow(image_grid(images, int(num**0.5), side), cmap="gray", vmin=0, vmax=1)
    ax.set_title("Samples from the prior (observation means)")
    ax.axis("off")
    return save_figure(fig, path)


@torch.no_grad()
def guide_means(guide, x: torch.Tensor, idx: torch.Tensor | None = None, model=None, num_samples: int = 256
                ) -> torch.Tensor:
    """The guide's mean in the model's latent space, ``(N, D)`` (exact for the amortized Gaussian, from
    ``num_samples`` draws otherwise); ``model`` defaults to the guide's own latent space's model.

    :raises ValueError: if the latent space is unknown (pass ``model=``).
    """
    space = getattr(guide, "space", None)
    if model is not None and (space is None or space.model is not model):
        space = LatentSpace(model, x, idx)
    if space is None:
        raise ValueError("Expected the model whose latent space the guide's means live in: pass model=")
    return latent_moments(space, guide, x, idx, num_samples)[0]


@torch.no_grad()
def plot_reconstructions(model, guide, x: torch.Tensor, path, num: int = 16, idx: torch.Tensor | None = None) -> Path:
    """Top row: data; bottom row: observation means at the guide's mean in the latent space (through the model's
    ``decode(z)`` when it has one, e.g. a VAE-GAN whose likelihood is in feature space)."""
    x = x[:num]
    idx = default_idx(x, None if idx is None else idx[:num])
    space = LatentSpace(model, x, idx)
    u = latent_moments(space, guide, x, idx)[0]
    latents, _ = space.constrain(u[None])
    if hasattr(model, "decode") and len(space.blocks) == 1:  # the zoo's decoders: pixels even for feature likelihoods
        recon = model.decode(next(iter(latents.values()))[0]).reshape(x.shape[0], -1)
    else:
        recon = observation_means(model, x, idx, {k: v[0] for k, v in latents.items()})
    data, side = as_images(x.reshape(x.shape[0], -1).float(), "data")
    recon, _ = as_images(recon, "reconstructions")
    fig, axes = new_figure((num * 0.6, 1.6), 2, 1)
    for ax, imgs, title in zip(axes, (data, recon), ("data", "reconstruction")):
        ax.imshow(image_grid(imgs, 1, side), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(title, rotation=0, ha="right", va="center")
        ax.set_xticks([]), ax.set_yticks([])
    return save_figure(fig, path)


@torch.no_grad()
def plot_latent_space(guide, x: torch.Tensor, labels: torch.Tensor, path, class_names=FASHION_MNIST_CLASSES,
                      model=None) -> Path:
    """Guide means of ``x`` in the latent space, in 2-D (the first two principal components when the latent space is
    larger), coloured by label."""
    z = guide_means(guide, x, model=model).cpu()
    title = "Latent means"
    if z.shape[1] > 2:
        z = z - z.mean(0)
        _, s, v = torch.linalg.svd(z, full_matrices=False)
        z = z @ v[:2].T
        title += f" (first 2 principal components, {100 * (s[:2]**2).sum() / (s**2).sum():.0f}% of variance)"
    fig, ax = new_figure((7, 6))
    sc = ax.scatter(z[:, 0], z[:, 1], c=labels.cpu(), cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    cbar = fig.colorbar(sc, ax=ax, ticks=range(10))
    if class_names is not None:
        cbar.ax.set_yticklabels(class_names)
    ax.set_title(title)
    return save_figure(fig, path)


@torch.no_grad()
def plot_mixture_density(gmm, x: torch.Tensor, path, labels: torch.Tensor | None = None, grid: int = 200) -> Path:
    """Contours of a fitted 2-D mixture's density ``p(x)`` (exact, ``gmm.log_marginal``) over the data points,
    with the component means marked.

    :raises ValueError: if ``x`` is not 2-D data.
    """
    if x.shape[1] != 2:
        raise ValueError(f"plot_mixture_density draws 2-D data, got x of shape {tuple(x.shape)}")
    lo, hi = x.min(0).values, x.max(0).values
    pad = 0.15 * (hi - lo)
    g0 = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), grid)
    g1 = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), grid)
    mesh = torch.stack(torch.meshgrid(g0, g1, indexing="xy"), -1).reshape(-1, 2).to(gmm.locs.dtype)
    density = gmm.log_marginal(mesh).exp().reshape(grid, grid)
    fig, ax = new_figure((6, 5))
    cs = ax.contourf(g0, g1, density, levels=20, cmap="viridis", alpha=0.8)
    fig.colorbar(cs, ax=ax, label="p(x)")
    ax.scatter(x[:, 0], x[:, 1], s=4, c="white" if labels is None else labels, cmap="tab10", edgecolors="none", alpha=0.6)
    ax.scatter(gmm.locs[:, 0], gmm.locs[:, 1], marker="x", s=80, c="red", label="component means")
    ax.legend(loc="upper right")
    ax.set_title(f"Gaussian mixture, K={gmm.num_components}: mean log p(x) = {gmm.log_marginal(x).mean():.3f} nats")
    return save_figure(fig, path)
