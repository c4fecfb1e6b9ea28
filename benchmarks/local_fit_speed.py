"""Per-datapoint optimization (q*, `fit_local_guide`) vectorized against one point at a time, same points,
same steps, in one process; the decoder's achieved FLOP rate against this machine's measured matrix-multiply
peak; optionally the whole inference-gap computation (`ppl_vae.gap.inference_gap`, what `ppl-vae gap` runs).

Both methods run exactly ``--steps`` Adam steps per point (early stopping is disabled with a huge window), are
interleaved (vectorized, sequential, vectorized, ...) and repeated; medians are reported. For N above
``--seq-points`` the sequential method is timed on the first ``--seq-points`` points only and extrapolated
linearly per point (its cost is proportional to the number of points by construction).

    python benchmarks/local_fit_speed.py [--run runs/demo] [--points 10 100 300] [--steps 50] [--repeats 2]
        [--seq-points 20] [--num-samples 8] [--gap-points 1000 --gap-eval-samples 5000 --gap-max-steps 3000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import pyro
import torch
from torch import nn

from ppl_vae.compiled import compilation
from ppl_vae.gap.local_fit import fit_local_guide


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
    x = load_splits("fashion-mnist-small", binarize="static").test.x  # (1000, 784), the embedded test images
    return model, guide, x


def best_mm_seconds(rows: int, inner: int, cols: int, warmup: int = 3, runs: int = 10) -> float:
    """Best wall time of ``torch.mm((rows, inner), (inner, cols))`` in float32 after a few warm-up runs."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    for _ in range(warmup):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return best


def decoder_flops_per_row(model) -> int:
    """Forward ``2*in*out`` + backward to the input ``2*in*out`` per nn.Linear, per row (the model is frozen:
    no weight gradients; the input gradient is needed because z depends on the q* parameters). Bias adds,
    activations and the likelihood are not counted."""
    return sum(4 * m.in_features * m.out_features for m in model.decoder.modules() if isinstance(m, nn.Linear))


def handwritten_fit(model, guide, x, args) -> float:
    """q*_FFG written directly in PyTorch, as ``fit_local_guide`` computes it: a (N, D) table of locations and one of
    softplus-scales started at the encoder's, ``num_samples`` reparameterized draws per point per step, the
    Bernoulli decoder frozen, the loss ``-sum_n mean_s log w_sn``, ``torch.optim.Adam`` (the fit's optimizer) at the
    fit's learning rate. Returns seconds."""
    t = time.perf_counter()
    with torch.no_grad():
        q = guide.distributions(x)["z"].base_dist
        loc = nn.Parameter(q.loc.clone())
        raw_scale = nn.Parameter(q.scale.clamp_min(1e-6).expm1().log())
    optimizer = torch.optim.Adam([loc, raw_scale], lr=1e-2)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(args.steps):
            scale = nn.functional.softplus(raw_scale)
            z = loc + scale * torch.randn(args.num_samples, *loc.shape)
            logits = model.decoder(z)
            log_px = -nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
            log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
            log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
            loss = -(log_px + log_pz - log_qz).mean(0).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return time.perf_counter() - t


def time_fit(model, guide, x, args, vectorized: bool, traced: bool = False) -> float:
    if traced:
        with compilation(enabled=False):
            return time_fit(model, guide, x, args, vectorized)
    t = time.perf_counter()
    fit = fit_local_guide(model, x, family="ffg", init_guide=guide, max_steps=args.steps, window=10**9,
                          num_samples=args.num_samples, seed=0, vectorized=vectorized)
    seconds = time.perf_counter() - t
    # every point must have run exactly --steps steps, or the two methods would not do the same work
    assert bool((fit.steps == args.steps).all()), f"steps {fit.steps.unique().tolist()} != {args.steps}"
    return seconds


def main(args):
    torch.set_num_threads(args.threads) if args.threads else None
    pyro.enable_validation(False)
    torch.distributions.Distribution.set_default_validate_args(False)
    model, guide, x = load(args)
    device = next(model.parameters()).device
    x = x.to(device)
    points = [n for n in args.points if n <= x.shape[0]]
    if len(points) < len(args.points):
        print(f"(skipping --points above the {x.shape[0]} test images)")
    per_row = decoder_flops_per_row(model)

    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}")
    # machine peak: a large square float32 matmul
    m = args.matmul_size
    peak = 2 * m**3 / best_mm_seconds(m, m, m) / 1e9
    print(f"matmul peak: torch.mm {m}x{m} @ {m}x{m} float32: {peak:.1f} GFLOP/s")

    # warm-up (lazy initialisation, allocator, Pyro's first traces) outside the timings
    time_fit(model, guide, x[:2], argparse.Namespace(**{**vars(args), "steps": 2}), True)
    time_fit(model, guide, x[:2], argparse.Namespace(**{**vars(args), "steps": 2}), False)

    vec = {n: [] for n in points}  # seconds per point-step
    seq = {n: [] for n in points}
    traced = {n: [] for n in points}
    hand = {n: [] for n in points}
    for r in range(args.repeats):
        for n in points:
            vec[n].append(time_fit(model, guide, x[:n], args, True) / (n * args.steps))
            traced[n].append(time_fit(model, guide, x[:n], args, True, traced=True) / (n * args.steps))
            hand[n].append(handwritten_fit(model, guide, x[:n], args) / (n * args.steps))
            n_seq = min(n, args.seq_points)
            seq[n].append(time_fit(model, guide, x[:n_seq], args, False) / (n_seq * args.steps))
            print(f"repeat {r + 1} N={n:<5} vectorized {vec[n][-1] * n * args.steps:8.3f} s   "
                  f"traced {traced[n][-1] * n * args.steps:8.3f} s   hand-written {hand[n][-1] * n * args.steps:8.3f} s   "
                  f"sequential {seq[n][-1] * n * args.steps:8.3f} s"
                  + (f" (extrapolated from {n_seq} points)" if n_seq < n else ""))

    print(f"\nq*_ffg fit, {args.steps} steps per point (early stopping off), {args.num_samples} samples per point "
          f"per step, {torch.get_num_threads()} threads, medians of {args.repeats} interleaved repeats")
    print(f"sequential times for N > {args.seq_points}: measured on the first {args.seq_points} points, "
          f"extrapolated linearly per point")
    print(f"decoder FLOPs: per nn.Linear (in, out), forward 2*in*out + backward-to-input 2*in*out = 4*in*out per row "
          f"= {per_row:,} FLOP per row; rows per step = N * {args.num_samples}")
    print("decoder GFLOP/s = decoder FLOPs / total vectorized fit time: a lower bound on decoder throughput "
          "(the time includes the guide, likelihood, Adam and Pyro overhead)")
    mm_label = f"mm GFLOP/s (N*{args.num_samples}x200@200x784)"
    header = (f"{'points':>6}  {'vectorized s/point-step':>23}  {'sequential s/point-step':>23}  {'speed-up':>8}  "
              f"{'decoder GFLOP/s':>15}  {'% of matmul peak':>16}  {'traced % of peak':>16}  {'hand % of peak':>14}  "
              f"{'vec / hand':>10}  {mm_label:>{len(mm_label)}}")
    print("\n" + header)
    speedups = []
    for n in points:
        v, s = statistics.median(vec[n]), statistics.median(seq[n])
        gflops = per_row * args.num_samples / v / 1e9  # (FLOPs per point-step) / (seconds per point-step)
        # the matmul the decoder's largest layer does at this N, for reference (hidden 200 -> 784 pixels)
        last = [l for l in model.decoder.modules() if isinstance(l, nn.Linear)][-1]
        rows = n * args.num_samples
        mm = 2 * rows * last.in_features * last.out_features / best_mm_seconds(rows, last.in_features, last.out_features) / 1e9
        speedups.append(s / v)
        tr, hw = statistics.median(traced[n]), statistics.median(hand[n])
        print(f"{n:>6}  {v:>23.3e}  {s:>23.3e}  {s / v:>7.1f}x  {gflops:>15.2f}  {100 * gflops / peak:>15.1f}%  "
              f"{100 * per_row * args.num_samples / tr / 1e9 / peak:>15.1f}%  "
              f"{100 * per_row * args.num_samples / hw / 1e9 / peak:>13.1f}%  {v / hw:>10.3f}  "
              f"{mm:>{len(mm_label)}.1f}")
    print(f"measured matmul peak ({m}x{m} @ {m}x{m} float32, best of 10): {peak:.1f} GFLOP/s (target: vectorized >= 60 %)")
    print("traced: the vectorized fit under compilation(enabled=False) (Pyro's handlers every step); hand: the same "
          "fit written directly in PyTorch (handwritten_fit); both fits include one recording of the fast path's graph")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    grows = all(b > a for a, b in zip(speedups, speedups[1:]))
    print(f"speed-up grows with N: {'yes' if grows else 'no'}"
          + (f"; at 100 points: {speedups[points.index(100)]:.1f}x (target >= 4x)" if 100 in points else ""))

    if args.gap_points > 0:
        from ppl_vae.gap import inference_gap

        n = min(args.gap_points, x.shape[0])
        t = time.perf_counter()
        result = inference_gap(model, guide, x[:n], eval_samples=args.gap_eval_samples,
                               local_kwargs=dict(max_steps=args.gap_max_steps))
        seconds = time.perf_counter() - t
        print(f"\ninference gap (families {result.info['families']}, eval_samples={args.gap_eval_samples}, "
              f"max_steps={args.gap_max_steps}) on {n} test points: {seconds:.1f} s total, {seconds / n:.3f} s/point; "
              f"mean steps {', '.join(f'{k} {v.float().mean():.0f}' for k, v in result.steps.items())}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a trained run directory (default: a randomly initialized VAE)")
    p.add_argument("--points", type=int, nargs="+", default=[10, 100, 300])
    p.add_argument("--steps", type=int, default=50, help="Adam steps per point (the same for both methods)")
    p.add_argument("--num-samples", type=int, default=8, help="Monte-Carlo samples per point per step")
    p.add_argument("--seq-points", type=int, default=20, help="points timed for the sequential method (extrapolated)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul that measures the peak")
    p.add_argument("--gap-points", type=int, default=0, help="also time inference_gap on this many points (0: skip)")
    p.add_argument("--gap-eval-samples", type=int, default=5000)
    p.add_argument("--gap-max-steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=0)
    main(p.parse_args())
