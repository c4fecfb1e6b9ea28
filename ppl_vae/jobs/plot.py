"""The plot job (``ppl-vae plot``): the figures of a trained run, written all or none."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ppl_vae.figures.samples import plot_latent_space, plot_prior_samples, plot_reconstructions
from ppl_vae.figures.training import plot_collapse, plot_history
from ppl_vae.runs import Run

from .inputs import as_run, split_data
from .outputs import staged_directory

__all__ = ["plot_run"]

logger = logging.getLogger(__name__)


def plot_run(run: Run | str | os.PathLike, out_dir: str | os.PathLike, *, n: int = 2000, seed: int = 0,
             device: str = "cpu") -> list[Path]:
    """``ppl-vae plot``: write the run's figures into ``out_dir``: ``prior_samples.png``, ``elbo_curves.png``; for
    models with a continuous latent space ``reconstructions.png`` and ``latent_space.png`` (test points, or training
    points for a per-datapoint guide); for runs that logged collapse diagnostics ``kl_per_dimension.png``.

    :param run: a :class:`~ppl_vae.runs.Run` or its directory (loaded onto ``device``).
    :param out_dir: the directory (created if needed; the command's default is ``RUN/figures``).
    :param int n: at most this many points in the latent-space scatter.
    :param int seed: seed of the prior samples and the guide's draws.
    :param str device: where to load a run given as a directory.
    :returns: the paths written, in the order above.
    :raises ValueError: if ``n < 1`` or ``out_dir`` (or a parent) is a file.
    :raises DataError: if the run's images do not fit its model.
    :raises OSError: if the files cannot be written (none is then).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected n to be an integer >= 1, got {n!r}")
    run = as_run(run, device)
    data = split_data(run, "test" if run.amortized else "train")  # per-datapoint guides know training points only
    names = []
    with staged_directory(out_dir) as stage:
        torch.manual_seed(seed)
        names.append(plot_prior_samples(run.model, stage / "prior_samples.png", data.x).name)
        names.append(plot_history(run.history, stage / "elbo_curves.png").name)
        if hasattr(run.model, "decode") and run.config.model != "vqvae":  # models with a continuous latent site
            names.append(plot_reconstructions(run.model, run.guide, data.x, stage / "reconstructions.png").name)
            names.append(plot_latent_space(run.guide, data.x[:n], data.labels[:n], stage / "latent_space.png",
                                           model=run.model).name)
        if run.history.get("kl_per_dim"):
            names.append(plot_collapse(torch.tensor(run.history["kl_per_dim"]), stage / "kl_per_dimension.png",
                                       title=f"KL per latent dimension over training (active units at the end: "
                                             f"{run.history['active_units'][-1]})").name)
    return [Path(out_dir) / name for name in names]
