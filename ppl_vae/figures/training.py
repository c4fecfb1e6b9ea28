"""Figures of training: the ELBO curves and the KL of every latent dimension over training (posterior collapse)."""
from __future__ import annotations

from pathlib import Path

import torch

from .figure import new_figure, save_figure

__all__ = ["plot_history", "plot_collapse"]


def plot_history(history: dict, path) -> Path:
    """Training ELBO, the trained objective where it is not the ELBO (``history["objective"]`` names it), and the
    held-out ELBO (validation, or test for a run without a validation split), nats per data point against epochs."""
    fig, ax = new_figure((6, 4))
    epochs = history["epoch"]
    if any(v is not None for v in history.get("train_elbo", [])):
        ax.plot(epochs, [float("nan") if v is None else v for v in history["train_elbo"]], "o-", label="train ELBO")
    objective = history.get("train_objective")
    if objective and objective != history.get("train_elbo"):
        ax.plot(epochs, objective, "^--", label=f"trained objective: {history.get('objective', 'not the ELBO')}")
    split = history.get("valid_split", "valid")
    held_out = history.get(f"{split}_elbo", [])
    if held_out:
        ax.plot(epochs, [float("nan") if v is None else v for v in held_out], "s-",
                label="validation ELBO" if split == "valid" else f"{split} ELBO (no validation split)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per data point")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_collapse(kl, path, title: str | None = None):
    """Bar chart of the KL per latent dimension, sorted; with a history, also a heatmap over epochs.

    :param kl: ``(D,)`` KL per dimension (:func:`kl_per_dimension`), or ``(epochs, D)`` its history (the bars
        show the last epoch; the heatmap's rows are the dimensions in the bars' order).
    :param path: where to save the PNG.
    :returns: the path.
    :raises ValueError: if ``kl`` is not ``(D,)`` or ``(epochs, D)``.
    """
    kl = torch.as_tensor(kl, dtype=torch.float64).cpu()
    if kl.dim() not in (1, 2) or kl.shape[-1] == 0:
        raise ValueError(f"Expected kl of shape (D,) or (epochs, D), got shape {tuple(kl.shape)}")
    last = kl if kl.dim() == 1 else kl[-1]
    order = torch.argsort(last, descending=True)
    d = last.shape[0]
    if kl.dim() == 1:
        fig, ax = new_figure((max(4.0, 0.18 * d + 2), 3.5))
        axes = [ax]
    else:
        fig, axes = new_figure((max(8.0, 0.36 * d + 4), 3.8), 1, 2)
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
