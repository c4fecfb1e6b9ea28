"""How long ``ppl-vae --help``, an argument error and ``--version`` take, each in a fresh process (the parser must
not import torch or pyro). Prints the median and the range over ``--repeats`` runs.

    python benchmarks/cli_startup.py --repeats 5
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _command() -> list[str]:
    script = shutil.which("ppl-vae", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "ppl_vae.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cases = {"--help": ["--help"], "train --help": ["train", "--help"], "argument error": ["train", "--out", "x", "--hidden", "-5"],
             "--version": ["--version"]}
    print(f"{'command':<16} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.repeats} fresh processes each)")
    for name, argv in cases.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([*_command(), *argv], capture_output=True)
            times.append(time.perf_counter() - start)
        print(f"{name:<16} {statistics.median(times):>9.3f} {min(times):>7.3f} {max(times):>7.3f}")


if __name__ == "__main__":
    main()
