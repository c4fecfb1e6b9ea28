"""What each term of the ELBO does: reconstruction only, KL only, and both, with 2-D latent spaces.

The ELBO is a reconstruction term minus a KL term,

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)).

This example trains three 2-D-latent models on the embedded Fashion-MNIST subset, one per objective, and draws
their test latent means side by side, coloured by class (the lecture's "results discussed" pictures):

(a) reconstruction only: the deterministic autoencoder (``models.autoencoder``: a point-mass encoder and a flat
    prior, so Trace_ELBO is exactly the binary cross-entropy). Classes separate, but the codes lie wherever the
    encoder puts them: nothing asks them to fill a region that a prior could sample from.
(b) KL only: the VAE with its likelihood switched off. A small messenger, ``DropLikelihood``, sets ``mask=False``
    on every observed site, so the log-likelihood of x is multiplied by 0 and TraceMeanField_ELBO is the analytic
    KL alone. Its optimum is q(z|x) = p(z) for every x: all codes at the origin, nothing about x kept (the
    extreme of posterior collapse; the limit beta -> infinity of a beta-VAE, rescaled).
(c) both: the VAE. Codes separate by class *and* fill the prior's N(0, I) ball.

    python examples/objective_ablation.py --out examples/out/ablation --epochs 10
"""
import argparse
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from ppl_vae.data.splits import load_splits, make_loader
from ppl_vae.diagnostics.collapse import kl_per_dimension
from ppl_vae.figures import image_grid, new_figure, save_figure
from ppl_vae.figures.samples import FASHION_MNIST_CLASSES
from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import BernoulliVAE
from ppl_vae.models.autoencoder import Autoencoder, DeltaEncoder
from ppl_vae.objectives.free_bits import FreeBitsELBO
from ppl_vae.training.trainer import Trainer


class DropLikelihood(Messenger):
    """Set ``mask=False`` on every observed sample site: its log-density counts as 0, latent sites are untouched."""

    def _process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["mask"] = False


def make_runs(hidden):
    """``{name: (model, guide, objective, model as trained)}`` for the three objectives."""
    autoencoder = (Autoencoder(z_dim=2, hidden=hidden), DeltaEncoder(z_dim=2, hidden=hidden))
    kl_only = (BernoulliVAE(z_dim=2, hidden=hidden), AmortizedNormal(784, {"z": 2}, hidden))
    vae = (BernoulliVAE(z_dim=2, hidden=hidden), AmortizedNormal(784, {"z": 2}, hidden))
    return {
        "(a) reconstruction only\n(autoencoder)": (*autoencoder, Trace_ELBO(), autoencoder[0]),
        "(b) KL only\n(likelihood masked out)": (*kl_only, TraceMeanField_ELBO(), DropLikelihood()(kl_only[0])),
        "(c) reconstruction + KL\n(VAE)": (*vae, TraceMeanField_ELBO(), vae[0]),
    }


@torch.no_grad()
def evaluate(model, guide, x):
    """``(latent means (N, 2), mean log p(x|z) per image, mean KL per image or None for the autoencoder)``."""
    means = guide.distributions(x)["z"].mean
    if isinstance(model, Autoencoder):
        return means, -Trace_ELBO().loss(model, guide, x) / x.shape[0], None
    kl = kl_per_dimension(model, guide, x).sum().item()
    elbo = -FreeBitsELBO(free_bits_per_dim=0.0).loss(model, guide, x) / x.shape[0]
    return means, elbo + kl, kl


def plot_latents(results, labels, path):
    """The latent means of every run side by side, coloured by ``labels (N,)``."""
    fig, axes = new_figure((5 * len(results), 4.6), 1, len(results))
    fig.subplots_adjust(wspace=0.35)
    for ax, (name, (z, log_lik, kl)) in zip(axes, results.items()):
        sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
        kl_text = "no KL term" if kl is None else f"KL {kl:.2f} nats"
        ax.set_title(f"{name}\nlog p(x|z) {log_lik:.1f} nats, {kl_text}", fontsize=10)
        ax.set_xlabel("z_1")
        ax.set_ylabel("z_2")
    cbar = fig.colorbar(sc, ax=list(axes), ticks=range(10))
    cbar.ax.set_yticklabels(FASHION_MNIST_CLASSES)
    fig.suptitle("Test latent means, coloured by class (note the different axis scales)", y=1.06)
    return save_figure(fig, path)


@torch.no_grad()
def plot_reconstructions(runs, results, x, path):
    """Rows: the test images ``x (n, 784)``, then each model's decoder mean at their latent means."""
    n = x.shape[0]
    rows = [("data", x)] + [(name.split("\n")[0], runs[name][0].decode(results[name][0][:n])) for name in runs]
    fig, axes = new_figure((x.shape[0] * 0.6, 0.75 * len(rows)), len(rows), 1)
    for ax, (title, images) in zip(axes, rows):
        ax.imshow(image_grid(images.cpu(), 1), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    return save_figure(fig, path)


def main(args):
    out = Path(args.out)
    pyro.set_rng_seed(args.seed)
    splits = load_splits("fashion-mnist-small", binarize="static", valid_size=500)
    test = splits.test
    runs = make_runs(tuple(args.hidden))
    results = {}
    for name, (model, guide, objective, trained_model) in runs.items():
        trainer = Trainer(trained_model, guide, objective, lr=args.lr, modules=[model])
        for epoch in range(args.epochs):
            trainer.train_epoch(make_loader(splits.train, args.batch_size, seed=args.seed + epoch))
        results[name] = evaluate(model, guide, test.x)
        _, log_lik, kl = results[name]
        summary = name.replace("\n", " ")
        print(f"{summary}: test log p(x|z) {log_lik:.2f} nats/image, KL {'-' if kl is None else f'{kl:.2f}'} nats/image")
    print(f"saved {plot_latents(results, test.labels, out / 'latents_by_objective.png')}")
    print(f"saved {plot_reconstructions(runs, results, test.x[:12], out / 'reconstructions_by_objective.png')}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/out/ablation")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=[200, 200])
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
