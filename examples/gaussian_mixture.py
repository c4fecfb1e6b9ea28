"""The Gaussian mixture as a latent-variable model, fitted by SVI with enumeration.

Draws 2-D data from a known 4-component mixture, fits a mixture by SVI with Pyro's TraceEnum_ELBO (each point's
component summed out exactly), compares the exact log-likelihood of the fit with the truth's, checks that the
IWAE bound with the exact posterior over components equals log p(x), and saves the fitted density over the data.

    python examples/gaussian_mixture.py --out examples/out
"""
import argparse
from pathlib import Path

import pyro
import torch

from ppl_vae.estimators import iwae_bound
from ppl_vae.figures.samples import plot_mixture_density
from ppl_vae.models import GaussianMixture
from ppl_vae.training.gmm import fit_gmm


def main(args):
    pyro.set_rng_seed(args.seed)
    truth = GaussianMixture(4, 2, torch.tensor([[-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [4.0, 4.0]]), init_scale=1.0)
    with torch.no_grad():
        truth.logits.copy_(torch.tensor([0.4, 0.3, 0.2, 0.1]).log())
    x, c = truth.sample(args.num_points)
    model, losses = fit_gmm(x, 4, num_steps=args.steps, lr=0.05, seed=args.seed)
    print(f"fitted in {args.steps} SVI steps: loss {losses[0]:.3f} -> {losses[-1]:.3f} nats/point")
    print(f"mean log p(x): fitted {model.log_marginal(x).mean():.4f}, true model {truth.log_marginal(x).mean():.4f}")
    print("fitted means:\n", model.locs.detach().numpy().round(2), "\nweights:", model.logits.softmax(-1).detach().numpy().round(3))
    iw = iwae_bound(model, model.exact_posterior_guide, x[:100], num_samples=8)
    print(f"IWAE with the exact posterior over components: {iw.mean:.4f} vs exact {model.log_marginal(x[:100]).mean():.4f}")
    path = plot_mixture_density(model, x, Path(args.out) / "gmm_density.png", labels=c)
    print(f"saved {path}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/out")
    p.add_argument("--num-points", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
