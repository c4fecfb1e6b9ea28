"""Seconds per epoch of the library's SVI training against a plain PyTorch VAE, same network, same batches.

All train the Cremer et al. (2018) architecture (784-200-200-2x50 encoder, 50-200-200-784 decoder, ELU,
Bernoulli) with Adam: the library's ``Trainer`` on its fast path (the loss replayed from a recorded graph,
:mod:`ppl_vae.compiled`) and on its traced path (``compilation(enabled=False)``: Pyro's handlers every step), and
the plain loop with PyTorch's default Adam and with ``Adam(fused=True)`` (what the trainer uses). Epochs are
interleaved in one process so that machine noise hits all alike; the first epoch (warm-up, the recording) is left
out of the medians. Prints seconds per epoch, the ratios and each one's test ELBO.

    python benchmarks/train_speed.py --epochs 4 [--dataset fashion-mnist] [--elbo trace|meanfield]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import pyro
import pyro.infer
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from ppl_vae.compiled import compilation
from ppl_vae.data import load_splits, make_loader
from ppl_vae.estimators import elbo
from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import BernoulliVAE
from ppl_vae.training.trainer import Trainer


class PlainVAE(nn.Module):
    """The same VAE written directly in PyTorch (the baseline)."""

    def __init__(self, z_dim=50, hidden=200):
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Sequential(nn.Linear(784, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 784))

    def loss(self, x, analytic_kl: bool):
        loc, raw = self.enc(x).chunk(2, -1)
        q = Normal(loc, nn.functional.softplus(raw) + 1e-4)
        z = q.rsample()
        log_lik = -nn.functional.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        p = Normal(torch.zeros_like(z), torch.ones_like(z))
        kl = kl_divergence(q, p).sum(-1) if analytic_kl else (q.log_prob(z) - p.log_prob(z)).sum(-1)
        return -(log_lik - kl).mean()

    @torch.no_grad()
    def test_elbo(self, x, analytic_kl: bool):
        return -self.loss(x, analytic_kl).item()


def main(args):
    torch.set_num_threads(args.threads) if args.threads else None
    pyro.enable_validation(args.validate)
    torch.distributions.Distribution.set_default_validate_args(args.validate)
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}")
    splits = load_splits(args.dataset, binarize="static", valid_size=0)
    torch.manual_seed(0)
    model, plain = BernoulliVAE(), PlainVAE()
    guide = AmortizedNormal(784, {"z": 50})
    objective = pyro.infer.TraceMeanField_ELBO() if args.elbo == "meanfield" else pyro.infer.Trace_ELBO()
    trainer = Trainer(model, guide, objective, lr=1e-3)
    model_t, guide_t = BernoulliVAE(), AmortizedNormal(784, {"z": 50})  # the traced path trains its own copy
    model_t.load_state_dict(model.state_dict())
    guide_t.load_state_dict(guide.state_dict())
    traced = Trainer(model_t, guide_t, type(objective)(), lr=1e-3)
    plain_fused = PlainVAE()
    plain_fused.load_state_dict(plain.state_dict())
    opts = {"plain": torch.optim.Adam(plain.parameters(), lr=1e-3),
            "plain_fused": torch.optim.Adam(plain_fused.parameters(), lr=1e-3, fused=True)}
    nets = {"plain": plain, "plain_fused": plain_fused}
    analytic = args.elbo == "meanfield"
    times = {"ppl_vae": [], "ppl_vae_traced": [], "plain": [], "plain_fused": []}
    n_batches = None
    for epoch in range(args.epochs):
        batches = [(x, i) for x, _, i in make_loader(splits.train, args.batch_size, seed=epoch)][: args.max_batches]
        n_batches = len(batches)
        t = time.perf_counter()
        for x, i in batches:
            trainer.step(x, i)
        times["ppl_vae"].append(time.perf_counter() - t)
        with compilation(enabled=False):
            t = time.perf_counter()
            for x, i in batches:
                traced.step(x, i)
            times["ppl_vae_traced"].append(time.perf_counter() - t)
        for name, net in nets.items():
            t = time.perf_counter()
            for x, _ in batches:
                loss = net.loss(x, analytic)
                opts[name].zero_grad(set_to_none=True)
                loss.backward()
                opts[name].step()
            times[name].append(time.perf_counter() - t)
        print(f"epoch {epoch + 1}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    med = {k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in times.items()}  # first epoch is warm-up
    test = splits.test.x
    torch.manual_seed(1)
    lib_elbo = elbo(model, guide, test, num_samples=10, analytic_kl=analytic).mean
    plain_elbo = {}
    for name, net in nets.items():
        torch.manual_seed(1)
        plain_elbo[name] = statistics.mean(net.test_elbo(test, analytic) for _ in range(10))
    print(f"\n{args.dataset}, {n_batches} batches of {args.batch_size} per epoch, elbo={args.elbo}, "
          f"validation={'on' if args.validate else 'off'}, {torch.get_num_threads()} threads")
    print(f"{'':<15}{'s/epoch (median)':>16}{'test ELBO':>12}")
    print(f"{'ppl_vae':<15}{med['ppl_vae']:>16.3f}{lib_elbo:>12.2f}")
    print(f"{'ppl_vae_traced':<15}{med['ppl_vae_traced']:>16.3f}{'':>12}")
    for name in nets:
        print(f"{name:<15}{med[name]:>16.3f}{plain_elbo[name]:>12.2f}")
    print(f"ratio ppl_vae / plain (torch.optim.Adam defaults): {med['ppl_vae'] / med['plain']:.3f}")
    print(f"ratio ppl_vae / plain_fused (Adam(fused=True), as ppl_vae uses): {med['ppl_vae'] / med['plain_fused']:.3f}"
          " (target <= 1.10)")
    print(f"ratio ppl_vae_traced / plain_fused (Pyro's handlers every step): "
          f"{med['ppl_vae_traced'] / med['plain_fused']:.3f}")
    print(f"fast path: {trainer._compiled.stats if trainer._compiled is not None else 'not used'}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist-small")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--elbo", default="trace", choices=("trace", "meanfield"))
    p.add_argument("--validate", action="store_true", help="keep Pyro/torch argument validation on")
    p.add_argument("--threads", type=int, default=0)
    main(p.parse_args())
