"""Figures of a trained run: prior samples, reconstructions, the latent space coloured by label, loss curves.

Every function takes what it draws and a path, saves a PNG and returns the path.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pyro import poutine

from ppl_vae.conventions import max_plate_nesting
from ppl_vae.estimators.log_weights import vectorize_particles

from .figure import image_grid, new_figure, save_figure

__all__ = ["plot_prior_samples", "plot_reconstructions", "plot_latent_space",
           "guide_means", "plot_mixture_density", "FASHION_MNIST_CLASSES"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")


def plot_prior_samples(model, path, num: int = 64, seed: int = 0) -> Path:
    """Pixel probabilities of ``num`` draws ``z ~ p(z)`` through the decoder (``model.sample(num, probs=True)``)."""
    torch.manual_seed(seed)
    images = model.sample(num, probs=True).cpu()
    fig, ax = new_figure((6, 6))
    ax.imshow(image_grid(images, int(num**0.5)), cmap="gray", vmin=0, vmax=1)
    ax.set_title("Samples from the prior (pixel probabilities)")
    ax.axis("off")
    return save_figure(fig, path)


@torch.no_grad()
def guide_means(guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 32) -> torch.Tensor:
    """Posterior-mean latents ``(N, total latent size)`` under ``guide``, by averaging ``num_samples`` draws
    (any guide: the latent sites are traced and concatenated in order)."""
    idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
    dim = -(max_plate_nesting(guide, guide, x[:1], idx[:1]) + 1)
    trace = poutine.trace(vectorize_particles(guide, num_samples, dim)).get_trace(x, idx)
    values = [s["value"].mean(0).reshape(x.shape[0], -1) for n, s in trace.nodes.items()
              if s["type"] == "sample" and not s["is_observed"] and s["value"].dim() >= 2]
    return torch.cat(values, -1)


@torch.no_grad()
def plot_reconstructions(model, guide, x: torch.Tensor, path, num: int = 16) -> Path:
    """Top row: data; bottom row: decoder means at the guide's mean latent."""
    x = x[:num]
    z = guide_means(guide, x)
    recon = model.decode(z)
    fig, axes = new_figure((num * 0.6, 1.6), 2, 1)
    for ax, imgs, title in zip(axes, (x, recon), ("data", "reconstruction")):
        ax.imshow(image_grid(imgs.cpu(), 1), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(title, rotation=0, ha="right", va="center")
        ax.set_xticks([]), ax.set_yticks([])
    return save_figure(fig, path)


@torch.no_grad()
def plot_latent_space(guide, x: torch.Tensor, labels: torch.Tensor, path, class_names=FASHION_MNIST_CLASSES) -> Path:
    """Guide means of ``x`` in 2-D (the first two principal components when the latent space is larger),
    coloured by label."""
    z = guide_means(guide, x).cpu()
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
    with the component means marked."""
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
