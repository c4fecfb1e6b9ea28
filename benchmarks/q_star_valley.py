"""Does the q* stopping rule stop short on a slow valley? The FFG q* of a linear-Gaussian model with three nearly
collinear loadings (6 observed, 3 latent, noise 0.4: the closed-form FFG approximation gap is 2.89 nats) crawls along
a long, flat valley; every fit's exact ELBO is compared with the closed-form best diagonal Gaussian, point by point.

    python benchmarks/q_star_valley.py [--rules default "window=50,patience=3" ...] [--seeds 0 1] [--n 12]

Rules are ``default`` (`fit_local_guide`'s defaults) or ``key=value,...`` options of `fit_local_guide`.
"""
from __future__ import annotations

import argparse
import time

import pyro
import torch
from q_star_convergence import rule_options  # the same rule presets and key=value parsing (benchmarks/)

from ppl_vae.gap.local_fit import fit_local_guide
from ppl_vae.models import LinearGaussian


def valley_model() -> LinearGaussian:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 1, generator=g), torch.randn(6, 1, generator=g)
    weight = torch.cat([a, 0.9 * a + 0.3 * b, -0.7 * a + 0.2 * torch.randn(6, 1, generator=g)], 1)
    return LinearGaussian(6, 3, noise=0.4, weight=weight)


def main(args):
    torch.set_num_threads(args.threads) if args.threads else None
    model = valley_model()
    pyro.set_rng_seed(1)
    x = model.marginal().sample((args.n,)).detach()
    idx = torch.arange(200, 200 + args.n)
    best = (model.log_marginal(x) - model.ffg_approximation_gap()).detach()
    print(f"closed-form FFG approximation gap {model.ffg_approximation_gap().item():.3f} nats; {args.n} points")
    print(f"{'rule':<28} {'seed':>4} {'mean short':>10} {'max':>7} {'> 0.05':>7} {'steps/pt':>9} {'hit cap':>7} {'s':>5}")
    for rule in args.rules:
        for seed in args.seeds:
            t = time.perf_counter()
            fit = fit_local_guide(model, x, idx, family="ffg", seed=seed, **rule_options(rule, args))
            loc, scale = fit.guide.loc_scale(idx)
            short = best - model.elbo_gaussian(x, loc, torch.diag_embed(scale**2)).detach()
            print(f"{rule:<28} {seed:>4} {short.mean():10.4f} {short.max():7.4f} {int((short > 0.05).sum()):7d} "
                  f"{fit.steps.float().mean():9.0f} {int((~fit.converged).sum()):7d} {time.perf_counter() - t:5.0f}",
                  flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", nargs="+", default=["patience=3", "default", "window=50,patience=4",
                                                  "window=50,patience=3"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    main(p.parse_args())
