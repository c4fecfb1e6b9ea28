"""Does q* converge? Per-datapoint fits (`fit_local_guide`) under several stopping rules against a long run, on the
same trained weights and test points: the mean L[q*] each rule reaches, its paired difference to the long run, and
its cost (steps per point, samples per point, wall time, share of points that hit the step cap).

Rules (``--rules``, any of):

- ``before``: the defaults before issue 12 — 8 samples per step, constant Adam 1e-2, window 100, patience 3.
- ``default``: `fit_local_guide`'s defaults today.
- ``long``: the reference — 50 samples per step, constant Adam 1e-2, no early stopping, ``--long-steps`` steps.
- ``long-decay``: the reference with the default rule's per-point step-size decay, 50 samples per step, at most
  ``--long-steps`` steps (a check on the reference itself).

Every L[q*] is evaluated afresh with ``--eval-samples`` samples per point and the same seed, after the fit.

    python benchmarks/q_star_convergence.py --run RUN [--checkpoint RUN/checkpoints/epoch_0100.pt] [--n 100]
        [--family ffg] [--rules before default long] [--long-steps 3800] [--eval-samples 5000]
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import time

import pyro
import torch

from ppl_vae.estimators import elbo
from ppl_vae.gap.local_fit import fit_local_guide
from ppl_vae.runs import load_run

BEFORE = {"num_samples": 8, "window": 100, "patience": 3, "decays": 0}


def rule_options(name: str, args) -> dict:
    """The options of :func:`fit_local_guide` of a rule: a preset (see the module) or ``key=value,...`` options
    (e.g. ``num_samples=16,lr_decay=0.5``)."""
    if name == "before":
        return dict(BEFORE)
    if name == "default":
        return {}
    if name == "long":
        return {"num_samples": 50, "window": 10**9, "decays": 0, "max_steps": args.long_steps}
    if name == "long-decay":
        return {"num_samples": 50, "max_steps": args.long_steps}
    if "=" in name:
        options = {}
        for item in name.split(","):
            key, value = item.split("=")
            options[key] = float(value) if key in ("lr", "lr_decay") else int(value)
        return options
    raise ValueError(f"Unknown rule {name!r}; expected before, default, long, long-decay or key=value,...")


def main(args):
    torch.set_num_threads(args.threads) if args.threads else None
    run = load_run(args.run, checkpoint=args.checkpoint)
    test = run.splits().test
    x = test.x[: args.n]
    idx = torch.arange(x.shape[0])
    print(f"run {args.run} (epoch {run.epoch}), {x.shape[0]} test points, family {args.family}, "
          f"{torch.get_num_threads()} threads")
    results = {}
    for name in args.rules:
        options = rule_options(name, args)
        t = time.perf_counter()
        fit = fit_local_guide(run.model, x, idx, args.family, init_guide=run.guide, seed=args.seed,
                              progress=False, **options)
        seconds = time.perf_counter() - t
        samples = options.get("num_samples", inspect.signature(fit_local_guide).parameters["num_samples"].default)
        pyro.set_rng_seed(args.seed + 1)
        value = elbo(run.model, fit.guide, x, idx, num_samples=args.eval_samples).per_point.detach()
        results[name] = {"elbo": value, "seconds": seconds, "steps": fit.steps.float().mean().item(),
                         "max_steps": fit.steps.max().item(), "loop": fit.loop_steps,
                         "sample_steps": (fit.steps.float() * samples).mean().item(),
                         "hit_cap": 1 - fit.converged.float().mean().item(), "options": options}
        print(f"{name:<28} L[q*] {value.mean():9.3f}  mean steps {results[name]['steps']:7.0f}  "
              f"max {results[name]['max_steps']:5d}  loop {fit.loop_steps:5d}  "
              f"hit cap {100 * results[name]['hit_cap']:4.0f} %  {seconds:7.1f} s", flush=True)
    ref = "long" if "long" in results else None
    print(f"\n{'rule':<28} {'L[q*]':>9} {'- long':>8} {'± s.e.':>7} {'steps/pt':>9} {'samples x steps/pt':>18} "
          f"{'wall s':>8} {'hit cap':>8}")
    for name, r in results.items():
        diff, se = float("nan"), float("nan")
        if ref is not None:
            d = r["elbo"] - results[ref]["elbo"]
            diff, se = d.mean().item(), d.std().item() / math.sqrt(d.numel())
        print(f"{name:<28} {r['elbo'].mean():9.3f} {diff:8.3f} {se:7.3f} {r['steps']:9.0f} {r['sample_steps']:18.0f} "
              f"{r['seconds']:8.1f} {100 * r['hit_cap']:7.0f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: {**{kk: vv for kk, vv in v.items() if kk != "elbo"}, "elbo_mean": v["elbo"].mean().item(),
                           "elbo": v["elbo"].tolist()} for k, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run directory")
    p.add_argument("--checkpoint", default=None, help="a checkpoint of the run (default RUN/checkpoint.pt)")
    p.add_argument("--n", type=int, default=100, help="the first n test points")
    p.add_argument("--family", default="ffg")
    p.add_argument("--rules", nargs="+", default=["before", "default", "long"])
    p.add_argument("--long-steps", type=int, default=3800)
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results (per point) to this JSON file")
    main(p.parse_args())
