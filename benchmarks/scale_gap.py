"""Wall time of the whole ``ppl-vae gap`` on one run: 1 process x 2 threads against 2 processes x 1 thread
(``torchrun --nproc_per_node=2``, gloo), at several numbers of test points, and the scaling law fitted to them
(``time = a * points ** b``, least squares on the logs).

The issue's size is a Fashion-MNIST VAE of the Cremer architecture (784-200-200-50), FFG and flow q*, 5,000 evaluation
samples, 100 to 1,000 points::

    python benchmarks/scale_gap.py RUN --points 100 300 1000 --eval-samples 5000

On a shared machine run it small and say so, e.g. ``--points 10 20 --eval-samples 200 --max-steps 200``.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time


def _gap_argv(run: str, points: int, args, out: str) -> list[str]:
    return ["gap", run, "--num-points", str(points), "--eval-samples", str(args.eval_samples), "--max-steps",
            str(args.max_steps), "--families", *args.families, "--out", out, "--quiet"]


def _timed(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def _law(points: list[int], seconds: list[float]) -> tuple[float, float]:
    """``(a, b)`` of ``seconds = a * points ** b``."""
    xs, ys = [math.log(p) for p in points], [math.log(s) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(sum((x - mx) ** 2 for x in xs), 1e-12)
    return math.exp(my - b * mx), b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained run directory")
    parser.add_argument("--points", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--eval-samples", type=int, default=5000)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--families", nargs="+", default=["ffg", "flow"])
    parser.add_argument("--keep", default=None, help="keep the reports in this directory (default: a temporary one)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "ppl_vae.cli"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ppl_vae.cli"]
    print(f"{'points':>7} {'1 proc x 2 threads s':>21} {'2 procs x 1 thread s':>21}   (eval samples {args.eval_samples}, "
          f"q* at most {args.max_steps} steps, families {' '.join(args.families)})")
    one, two = [], []
    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()) as out:
        for n in args.points:
            one.append(_timed([*cli, *_gap_argv(args.run, n, args, f"{out}/one_{n}")], threads=2))
            two.append(_timed([*torchrun, *_gap_argv(args.run, n, args, f"{out}/two_{n}")], threads=1))
            print(f"{n:>7} {one[-1]:>21.1f} {two[-1]:>21.1f}")
    if len(args.points) > 1:
        for name, seconds in (("1 x 2", one), ("2 x 1", two)):
            a, b = _law(args.points, seconds)
            print(f"scaling {name}: time = {a:.3g} s * points^{b:.2f}; 1,000 points: {a * 1000 ** b:.0f} s")


if __name__ == "__main__":
    main()
