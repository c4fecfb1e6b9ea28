"""IWAE-5000 per data point: ppl_vae's `iwae_bound` (on its fast path, and on its traced path with
``compilation(enabled=False)``) against a hand-written vectorized torch loop (same chunks of rows) and against
Pyro's `vectorized_importance_weights` (which sums over the batch, so it runs one data point at a time to give
per-point values), same model, same points. Each method runs in its own subprocess so its peak memory
(max RSS) is its own; repeats are interleaved. Each method first runs on one point outside the timing (warm-up:
lazy initialisation, and for ppl_vae the recording of its graphs on their first call, whose time is printed; in a
long run a signature is recorded on its 20th call).

    python benchmarks/iwae_speed.py [--run runs/demo] [--points 200] [--k 5000] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


def load(args):
    from ppl_vae.data import load_splits
    from ppl_vae.guides import AmortizedNormal
    from ppl_vae.models import BernoulliVAE

    if args.run:
        from ppl_vae.runs import load_run

        run = load_run(args.run)
        model, guide = run.model, run.guide
    else:
        torch.manual_seed(0)
        model, guide = BernoulliVAE(), AmortizedNormal(784, {"z": 50})
    x = load_splits("fashion-mnist-small", binarize="static").test.x[: args.points]
    return model, guide, x


@torch.no_grad()
def handwritten(model, guide, x, k, chunk=None):
    """The plain-PyTorch IWAE: encoder once, samples in chunks (the same rows per pass as ppl_vae), running
    log-sum-exp."""
    from ppl_vae.estimators.chunks import DEFAULT_MAX_ROWS

    chunk = chunk or DEFAULT_MAX_ROWS
    out = []
    per = max(1, chunk // k)
    for a in range(0, x.shape[0], per):
        xc = x[a : a + per]
        q = guide.distributions(xc)["z"]
        loc, scale = q.base_dist.loc, q.base_dist.scale
        lse = torch.full((xc.shape[0],), -math.inf)
        done = 0
        while done < k:
            s = min(k, chunk // xc.shape[0])
            s = min(s, k - done)
            eps = torch.randn(s, *loc.shape)
            z = loc + scale * eps
            logits = model.decoder(z)
            log_px = -torch.nn.functional.binary_cross_entropy_with_logits(logits, xc.expand_as(logits), reduction="none").sum(-1)
            log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
            log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
            lse = torch.logaddexp(lse, (log_px + log_pz - log_qz).logsumexp(0))
            done += s
        out.append(lse - math.log(k))
    return torch.cat(out)


@torch.no_grad()
def pyro_vectorized(model, guide, x, k):
    from pyro.infer.importance import vectorized_importance_weights

    out = []
    for i in range(x.shape[0]):  # per-point values need one call per point (the weights are summed over the batch)
        log_w, _, _ = vectorized_importance_weights(model, guide, x[i : i + 1], torch.tensor([i]), num_samples=k,
                                                    max_plate_nesting=1)
        out.append(log_w.logsumexp(0) - math.log(k))
    return torch.stack(out)


def child(args):
    import pyro

    pyro.enable_validation(False)
    torch.distributions.Distribution.set_default_validate_args(False)
    from ppl_vae.compiled import compilation
    from ppl_vae.estimators import iwae_bound

    model, guide, x = load(args)
    n = x.shape[0] if args.method != "pyro" else min(x.shape[0], args.pyro_points)
    x = x[:n]
    def run(x):
        if args.method == "ppl_vae":
            return iwae_bound(model, guide, x, num_samples=args.k).per_point
        if args.method == "ppl_vae_traced":
            with compilation(enabled=False):
                return iwae_bound(model, guide, x, num_samples=args.k).per_point
        if args.method == "handwritten":
            return handwritten(model, guide, x, args.k)
        return pyro_vectorized(model, guide, x, args.k)

    torch.manual_seed(0)
    t = time.perf_counter()
    with compilation(record_after=1):  # warm-up, and the fast path's recording of its two pass shapes, untimed
        run(x[:1])
    warmup = time.perf_counter() - t
    torch.manual_seed(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    values = run(x)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"method": args.method, "points": n, "seconds": seconds, "warmup": warmup, "peak_mb": peak / 1024,
                      "peak_increase_mb": (peak - base) / 1024, "mean": values.mean().item()}))


def main(args):
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}")
    results = {m: [] for m in ("ppl_vae", "ppl_vae_traced", "handwritten", "pyro")}
    for r in range(args.repeats):
        for method in results:
            cmd = [sys.executable, __file__, "--child", "--method", method, "--points", str(args.points), "--k", str(args.k),
                   "--pyro-points", str(args.pyro_points)] + (["--run", args.run] if args.run else [])
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[method].append(json.loads(line))
            print(f"repeat {r + 1} {method:<12} {results[method][-1]['seconds']:.2f} s")
    print(f"\nIWAE-{args.k}, {torch.get_num_threads()} threads; seconds per data point (median of {args.repeats}), peak RSS")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(f"{'method':<16}{'points':>7}{'s/point':>10}{'peak RSS MB':>13}{'mean IWAE':>11}{'warm-up s':>11}")
    per_point = {}
    for m, rs in results.items():
        per_point[m] = statistics.median(r["seconds"] / r["points"] for r in rs)
        print(f"{m:<16}{rs[0]['points']:>7}{per_point[m]:>10.4f}{max(r['peak_mb'] for r in rs):>13.0f}"
              f"{rs[0]['mean']:>11.2f}{statistics.median(r['warmup'] for r in rs):>11.2f}")
    print(f"ratio ppl_vae / handwritten: {per_point['ppl_vae'] / per_point['handwritten']:.3f} (target <= 1.05)")
    print(f"ratio ppl_vae_traced / handwritten: {per_point['ppl_vae_traced'] / per_point['handwritten']:.3f}")
    print(f"ratio ppl_vae / pyro vectorized_importance_weights: {per_point['ppl_vae'] / per_point['pyro']:.3f}")
    print(f"projected full 10k test set with ppl_vae: {per_point['ppl_vae'] * 10000 / 60:.1f} min")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a trained run directory (default: a randomly initialized VAE)")
    p.add_argument("--points", type=int, default=200)
    p.add_argument("--pyro-points", type=int, default=20, help="points for Pyro's one-point-at-a-time version")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default="ppl_vae", help=argparse.SUPPRESS)
    args = p.parse_args()
    child(args) if args.child else main(args)
