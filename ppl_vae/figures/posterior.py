"""Pictures of posteriors: the true posterior on a grid against each guide (Cremer et al. 2018, Fig. 2), ArviZ
comparisons of guides with the NUTS reference, and latent-space pictures (manifold, prior samples by size)."""
from __future__ import annotations

import math
from pathlib import Path

import arviz as az
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ppl_vae.conventions import default_idx
from ppl_vae.latent_space import LatentSpace

from .figure import image_grid, new_figure, save_figure
from .samples import as_images, observation_means

__all__ = ["grid_log_posterior", "plot_posterior_grid", "plot_samplers_forest", "plot_samplers_pair",
           "plot_nuts_posterior", "plot_manifold", "plot_prior_samples_by_size"]




def _plane(model, x, idx) -> LatentSpace:
    space = LatentSpace(model, x, idx)
    space.require_continuous("A grid posterior")
    if space.dim != 2:
        raise ValueError(f"Expected a 2-D latent space for grid posteriors, got {space.dim} dimensions ({space})")
    return space


@torch.no_grad()
def grid_log_posterior(model, x: torch.Tensor, idx: torch.Tensor | None = None, lims=None, resolution: int = 150,
                       chunk: int = 4096):
    """The true posterior of a 2-D latent space on a grid, normalized numerically: ``log p(u | x)`` in the model's
    unconstrained latent space (:class:`~ppl_vae.latent_space.LatentSpace`; ``u = z`` for real-valued sites).

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` the points' own indices or ``None``.
    :param lims: ``(N, 2, 2)`` per-point ``[[u0_min, u0_max], [u1_min, u1_max]]`` or ``None`` (centred on each
        posterior, found on a coarse grid first).
    :returns: ``(g0 (N, G), g1 (N, G), log_post (N, G, G), log_evidence (N,))`` where ``log_post[n, i, j]`` is the
        log density at ``(g0[n, j], g1[n, i])`` and ``log_evidence`` is the grid quadrature of ``log p(x)``.
    :raises ValueError: if the latent space is not 2-D or has discrete sites that are not enumerated.
    """
    idx = default_idx(x, idx)
    space = _plane(model, x, idx)
    n = x.shape[0]
    dtype = next((q.dtype for q in getattr(model, "parameters", lambda: iter(()))()), torch.get_default_dtype())
    if lims is None:
        coarse = torch.tensor([[-6.0, 6.0], [-6.0, 6.0]], dtype=dtype, device=x.device).expand(n, 2, 2)
        g0, g1, lp, _ = grid_log_posterior(model, x, idx, coarse, 60, chunk)
        p = lp.exp()
        p = p / p.sum((-1, -2), keepdim=True)
        m0, m1 = (p.sum(1) * g0).sum(-1), (p.sum(2) * g1).sum(-1)
        s0 = ((p.sum(1) * (g0 - m0[:, None]) ** 2).sum(-1)).sqrt().clamp_min(0.05)
        s1 = ((p.sum(2) * (g1 - m1[:, None]) ** 2).sum(-1)).sqrt().clamp_min(0.05)
        lims = torch.stack([torch.stack([m0 - 4 * s0, m0 + 4 * s0], -1), torch.stack([m1 - 4 * s1, m1 + 4 * s1], -1)], 1)
    t = torch.linspace(0, 1, resolution, dtype=lims.dtype, device=x.device)
    g0 = lims[:, 0, :1] + (lims[:, 0, 1:] - lims[:, 0, :1]) * t  # (N, G)
    g1 = lims[:, 1, :1] + (lims[:, 1, 1:] - lims[:, 1, :1]) * t
    u = _grid_points(g0, g1)
    parts = []
    step = max(1, chunk // n)
    for a in range(0, u.shape[0], step):
        lp, ll = space.log_joint(x, idx, u[a: a + step])
        parts.append(lp + ll)
    log_joint = torch.cat(parts).transpose(0, 1).reshape(n, resolution, resolution)
    cell = (g0[:, 1] - g0[:, 0]) * (g1[:, 1] - g1[:, 0])
    log_evidence = log_joint.logsumexp((-1, -2)) + cell.log()
    return g0, g1, log_joint - log_evidence[:, None, None], log_evidence


def _grid_points(g0: torch.Tensor, g1: torch.Tensor) -> torch.Tensor:
    """``(G*G, N, 2)`` points with ``[i * G + j, n] = (g0[n, j], g1[n, i])``."""
    n, r = g0.shape
    u = torch.stack([g0[:, None, :].expand(n, r, r), g1[:, :, None].expand(n, r, r)], -1)
    return u.reshape(n, -1, 2).transpose(0, 1)


@torch.no_grad()
def plot_posterior_grid(model, guides: dict, x: torch.Tensor, path, idx=None, labels=None, resolution: int = 120,
                        draws: dict | None = None) -> Path:
    """True-posterior contours (filled) for up to four points side by side in the 2-D latent space, each guide's
    density overlaid as line contours (or its samples, for guides whose density cannot be evaluated at arbitrary
    points, such as planar flows).

    :param guides: ``{name: guide}``; each is called with the points' own ``idx``.
    :param draws: optional ``{name: (S, N, 2)}`` draws in the latent space (e.g. NUTS), drawn as dots.
    """
    idx = default_idx(x, idx)
    space = _plane(model, x, idx)
    n = x.shape[0]
    g0, g1, log_post, _ = grid_log_posterior(model, x, idx, resolution=resolution)
    colors = ["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    fig, axes = new_figure((3.6 * n, 3.4), 1, n, squeeze=False)
    names = space.coordinate_names()
    for i, ax in enumerate(axes[0]):
        ax.contourf(g0[i].cpu(), g1[i].cpu(), log_post[i].exp().cpu(), levels=12, cmap="Blues")
        ax.set_title(f"point {int(labels[i]) if labels is not None else int(idx[i])}")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    handles = [Patch(color="tab:blue", label="true posterior")]
    u = _grid_points(g0, g1)
    for c, (name, guide) in zip(colors, guides.items()):
        try:
            lq = space.guide_log_density(guide, x, idx, u).transpose(0, 1).reshape(n, resolution, resolution)
            for i, ax in enumerate(axes[0]):
                ax.contour(g0[i].cpu(), g1[i].cpu(), lq[i].exp().cpu(), levels=5, colors=c, linewidths=1.2)
        except (ValueError, NotImplementedError):  # e.g. planar flows: density only at their own samples
            samples = space.sample_guide(guide, x, idx, 300)[0]
            for i, ax in enumerate(axes[0]):
                ax.scatter(samples[:, i, 0].cpu(), samples[:, i, 1].cpu(), s=2, c=c, alpha=0.5)
        handles.append(Line2D([], [], color=c, label=name))
    for c, (name, s) in zip(colors[len(guides):], (draws or {}).items()):
        for i, ax in enumerate(axes[0]):
            ax.scatter(s[:, i, 0].cpu(), s[:, i, 1].cpu(), s=1, c=c, alpha=0.4)
        handles.append(Line2D([], [], color=c, marker="o", ls="", label=name))
    for i, ax in enumerate(axes[0]):
        ax.set_xlim(float(g0[i, 0]), float(g0[i, -1]))
        ax.set_ylim(float(g1[i, 0]), float(g1[i, -1]))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.08))
    fig.suptitle("True posterior and approximate distributions", y=1.04)
    return save_figure(fig, path)


def _sampler_vars(idata, site: str) -> list[str]:
    return [v for v in idata.posterior.data_vars if v.startswith(f"{site}_")]


def plot_samplers_forest(idata, path, site: str = "z", datapoint=None, dims=(0, 1, 2, 3)) -> Path:
    """``az.plot_forest`` of selected latent dimensions of one data point, one row group per sampler."""
    datapoint = idata.posterior.coords["datapoint"].values[0] if datapoint is None else datapoint
    names = _sampler_vars(idata, site)
    fig, ax = new_figure((7, 1 + 0.9 * len(dims) * len(names) / 2))
    az.plot_forest(idata, var_names=names, combined=True, hdi_prob=0.9,
                   coords={"datapoint": [datapoint], f"{site}_dim": list(dims)}, ax=ax)
    ax.set_title(f"data point {datapoint}: 90% intervals per sampler")
    return save_figure(fig, path)


def plot_samplers_pair(idata, path, site: str = "z", datapoint=None, dims=(0, 1)) -> Path:
    """``az.plot_pair`` (KDE) of two latent dimensions of one data point per sampler, on shared axes."""
    datapoint = idata.posterior.coords["datapoint"].values[0] if datapoint is None else datapoint
    names = _sampler_vars(idata, site)
    fig, axes = new_figure((3.4 * len(names), 3.4), 1, len(names), sharex=True, sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        az.plot_pair(idata, var_names=[name], coords={"datapoint": [datapoint], f"{site}_dim": list(dims)},
                     kind="kde", ax=ax)
        ax.set_title(name)
    return save_figure(fig, path)


def plot_nuts_posterior(idata, path, site: str = "z", datapoint=None, dims=(0, 1, 2, 3)) -> Path:
    """``az.plot_posterior`` of the NUTS reference for selected dimensions of one data point."""
    datapoint = idata.posterior.coords["datapoint"].values[0] if datapoint is None else datapoint
    fig, axes = new_figure((3 * len(dims), 2.6), 1, len(dims), squeeze=False)
    az.plot_posterior(idata, var_names=[f"{site}_nuts"], coords={"datapoint": [datapoint], f"{site}_dim": list(dims)},
                      ax=axes[0])
    return save_figure(fig, path)


@torch.no_grad()
def plot_manifold(model, path, x: torch.Tensor, n: int = 20) -> Path:
    """Observation means over a grid of a 2-D latent space, spaced by the standard normal's quantiles in the
    unconstrained space (Kingma & Welling 2014, Fig. 4); any model with a 2-D latent space and image-like
    observations.

    :param x: ``(M, ...)`` example data giving the model its shapes (one row is enough).
    :raises ValueError: if the latent space is not 2-D or the observations are not images.
    """
    space = _plane(model, x[:1], None)
    dtype = next((q.dtype for q in getattr(model, "parameters", lambda: iter(()))()), torch.get_default_dtype())
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n)).to(dtype=dtype, device=x.device)
    u = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(1, -1, 2)
    reps = x[torch.zeros(n * n, dtype=torch.long, device=x.device)]
    latents, _ = space.constrain(u)
    images, side = as_images(observation_means(model, reps, None, {k: v[0] for k, v in latents.items()}), "manifold")
    fig, ax = new_figure((7, 7))
    ax.imshow(image_grid(images.reshape(n, n, -1).transpose(0, 1).reshape(n * n, -1), n, side), cmap="gray")
    ax.set_title("Decoded manifold of the 2-D latent space")
    ax.axis("off")
    return save_figure(fig, path)


@torch.no_grad()
def plot_prior_samples_by_size(models: dict[int, torch.nn.Module], path, num: int = 36, seed: int = 0) -> Path:
    """Prior samples (pixel probabilities) of models with different latent sizes side by side (Kingma & Welling
    2014, Fig. 5)."""
    fig, axes = new_figure((3.2 * len(models), 3.4), 1, len(models), squeeze=False)
    for ax, (size, model) in zip(axes[0], sorted(models.items())):
        torch.manual_seed(seed)
        ax.imshow(image_grid(model.sample(num, probs=True).cpu(), int(math.isqrt(num))), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{size}-D latent space")
        ax.axis("off")
    return save_figure(fig, path)
