"""Fault injection: kill ``ppl-vae train`` at random moments and check that nothing is lost or silently wrong.

For every configuration (every ``--model``, ``--elbo``, ``--guide`` and KL-schedule option) the script trains one
uninterrupted reference run, then ``--trials`` runs that are killed ``--kills`` times each — ``kill -9`` or SIGINT
(Ctrl-C), at a uniformly random moment or while a checkpoint, snapshot, history or config file is being written —
and continued after every kill (``--resume``, or a fresh start if the kill came before the first checkpoint) until
they finish. After every kill it checks the run directory; at the end it compares the run with the reference.

It prints, per configuration and in total:

- ``kills``: the kills that hit a running training (``during writes``: those sent while a file was being written);
- ``corrupted``: states that fail a check — a checkpoint or kept snapshot that does not load, a ``history.json`` that
  does not parse or lags the checkpoint (it may hold one uncommitted epoch more, never fewer), a ``config.json``
  that disagrees with the checkpoint, or temporary files still there once the run has finished;
- ``failed resumes``: continuations that exited with an error;
- ``not bitwise``: finished runs whose checkpoint (parameters, optimizer and schedule state, random streams,
  history but timings) or kept snapshots differ in any bit from the reference run's.

Every training runs in a forked child of this process (no interpreter start-up per run) on one thread, so results
are bitwise reproducible. Example (about 4 minutes on 2 busy cores)::

    python benchmarks/fault_injection.py --trials 2 --kills 3 --epochs 3
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: no thread pool to break by forking

import torch  # noqa: E402

from ppl_vae import cli  # noqa: E402
from ppl_vae.runs import checkpoint as checkpoint_module  # noqa: E402
from ppl_vae.runs import run as run_module  # noqa: E402
from ppl_vae.runs.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

SMALL = ["--hidden", "16", "--batch-size", "250", "--valid-size", "3500", "--keep-every", "1", "--quiet"]
CONFIGS = {
    "vae --elbo trace": [],
    "vae --elbo meanfield": ["--elbo", "meanfield"],
    "vae --elbo iwae --k 3": ["--elbo", "iwae", "--k", "3"],
    "vae --elbo trace --k 2": ["--k", "2"],
    "vae --guide flow": ["--guide", "flow"],
    "vae --guide ffg": ["--guide", "ffg"],
    "vae --beta 2": ["--beta", "2"],
    "vae --warmup-steps 8": ["--warmup-steps", "8"],
    "vae --cycle-steps 5 --beta 2": ["--cycle-steps", "5", "--beta", "2"],
    "vae --free-bits 0.3": ["--free-bits", "0.3", "--elbo", "meanfield"],
    "vae --free-bits 0.3 --warmup-steps 8": ["--free-bits", "0.3", "--elbo", "meanfield", "--warmup-steps", "8"],
    "vae --valid-size 0": ["--valid-size", "0"],
    "ae": ["--model", "ae"],
    "vqvae": ["--model", "vqvae"],
    "vaegan": ["--model", "vaegan"],
    "aae": ["--model", "aae"],
}


def argv_of(name: str, out: Path, epochs: int, resume: bool) -> list[str]:
    flags = CONFIGS[name]
    size = [] if "vqvae" in name else ["--z-dim", "3"]
    small = [a for a in SMALL if a != "--valid-size" and a != "3500"] if "--valid-size" in flags else SMALL
    if resume:
        return ["train", "--out", str(out), "--resume", "--epochs", str(epochs), "--quiet"]
    return ["train", "--out", str(out), "--epochs", str(epochs), *size, *small, *flags]


class Child:
    """A training in a forked child; ``flag`` is shared memory: byte 0 is 1 while the child writes a file, byte 1
    counts the writes it has started."""

    def __init__(self, argv: list[str], flag: mmap.mmap, slow_writes: bool):
        self.flag = flag
        flag[0] = flag[1] = 0
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                torch.set_num_threads(1)
                _instrument(flag, slow_writes)
                code = cli.main(argv)
            except BaseException:  # noqa: BLE001 - report anything as a failure
                import traceback

                traceback.print_exc()
                code = 3
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid
        self.status: int | None = None

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None

    def wait(self) -> int:
        """Exit code, or minus the signal number."""
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(self.status)


def _instrument(flag: mmap.mmap, slow_writes: bool) -> None:
    """In the child: raise ``flag`` around every atomic write (checkpoint, snapshot, history, config), and make the
    fsync inside it last a few milliseconds so that kills land inside writes."""
    original = run_module.atomic_write_bytes
    real_fsync = os.fsync
    delays = random.Random()  # its own stream: the training's random streams must not be touched

    def flagged(path, data):
        flag[1] = (flag[1] + 1) % 256
        flag[0] = 1
        try:
            original(path, data)
        finally:
            flag[0] = 0

    def slow_fsync(fd):
        time.sleep(delays.uniform(0.001, 0.004))  # long enough for the parent to see the flag
        real_fsync(fd)

    run_module.atomic_write_bytes = flagged
    if slow_writes:
        checkpoint_module.os.fsync = slow_fsync


def differences(a, b, path="") -> list[str]:
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{path} (keys)"]
        return [d for k in a if k != "seconds" for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [f"{path} (length)"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}.{i}")]
    if hasattr(a, "shape"):  # a NumPy array (random states of older checkpoint formats)
        return [] if getattr(b, "shape", None) == a.shape and bool((a == b).all()) else [path]
    return [] if a == b else [path]


def _history_ok(history: dict, committed: dict) -> bool:
    """history.json holds the committed epochs, or those and the next one (trained, not committed): never fewer."""
    epochs = history.get("epoch")
    if epochs not in (committed["epoch"], [*committed["epoch"], len(committed["epoch"]) + 1]):
        return False
    for key, values in committed.items():
        if isinstance(values, list) and key != "seconds" and history.get(key, [])[: len(values)] != values:
            return False
    return True


def check_state(run: Path) -> list[str]:
    """What is wrong with the run directory right after a kill (empty if nothing)."""
    problems = []
    state = None
    if (run / "checkpoint.pt").exists():
        try:
            state = load_checkpoint(run / "checkpoint.pt")
        except CheckpointError as e:
            problems.append(f"checkpoint: {e}")
    if (run / "history.json").exists() and state is not None:
        try:
            history = json.loads((run / "history.json").read_text())
            committed = json.loads(json.dumps(state["history"]))
            if not _history_ok(history, committed):
                problems.append(f"history.json lags or disagrees: epochs {history.get('epoch')} vs checkpoint "
                                f"{committed.get('epoch')}")
        except ValueError as e:
            problems.append(f"history.json: {e}")
    if (run / "config.json").exists() and state is not None:
        try:
            if json.loads((run / "config.json").read_text()) != json.loads(json.dumps(state["config"])):
                problems.append("config.json disagrees with the checkpoint")
        except ValueError as e:
            problems.append(f"config.json: {e}")
    for snapshot in sorted((run / "checkpoints").glob("epoch_*.pt")):
        try:
            load_checkpoint(snapshot)
        except CheckpointError as e:
            problems.append(f"snapshot: {e}")
    return problems


def temporaries(run: Path) -> list[Path]:
    return [p for d in (run, run / "checkpoints") if d.is_dir() for p in d.iterdir() if p.name.endswith(".tmp")]


def kill_during(child: Child, rng: random.Random, moment: str, horizon: float, writes: int, sig: int) -> bool:
    """Send ``sig`` at a random moment (``"random"``: uniform over ``horizon`` seconds; ``"write"``: a few ms into
    one of the session's ``writes`` file writes, chosen uniformly). Returns whether it hit a running training."""
    start = time.perf_counter()
    deadline = start + (rng.uniform(0.0, horizon) if moment == "random" else 10 * horizon)
    target = rng.randrange(writes) + 1 if moment == "write" else 0  # which write to hit
    while child.alive():
        if moment == "write" and child.flag[1] >= target and child.flag[0]:
            time.sleep(rng.uniform(0.0, 0.003))
            break
        if time.perf_counter() >= deadline:
            break
        time.sleep(0.0002)
    if not child.alive():
        return False
    os.kill(child.pid, sig)
    return True


def run_config(name: str, args, root: Path, flag: mmap.mmap, rng: random.Random) -> dict:
    counts = {"kills": 0, "during writes": 0, "sigint": 0, "corrupted": 0, "failed resumes": 0, "not bitwise": 0,
              "notes": []}
    reference = root / "reference"
    start = time.perf_counter()
    rc = Child(argv_of(name, reference, args.epochs, False), flag, slow_writes=True).wait()
    horizon = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"{name}: the reference run failed (exit {rc})")
    ref_state = load_checkpoint(reference / "checkpoint.pt")
    ref_snapshots = {p.name: load_checkpoint(p) for p in (reference / "checkpoints").glob("epoch_*.pt")}
    for trial in range(args.trials):
        run = root / f"trial{trial}"
        kills_left = args.kills
        for _ in range(args.kills * 4 + 4):  # sessions until finished
            resume = (run / "checkpoint.pt").exists()
            done = load_checkpoint(run / "checkpoint.pt")["epoch"] if resume else 0
            child = Child(argv_of(name, run, args.epochs, resume), flag, slow_writes=True)
            if kills_left:
                moment = rng.choice(["random", "write"])
                sig = rng.choice([signal.SIGKILL, signal.SIGINT])
                remaining = horizon * (args.epochs - done + 0.5) / (args.epochs + 0.5)  # set-up and epochs left
                writes = (2 if resume else 3) + 3 * (args.epochs - done)  # config, start, 3 per epoch
                hit = kill_during(child, rng, moment, remaining, writes, sig)
                rc = child.wait()
                if hit:
                    kills_left -= 1
                    counts["kills"] += 1
                    counts["during writes"] += moment == "write"
                    counts["sigint"] += sig == signal.SIGINT
                    if sig == signal.SIGINT and rc not in (130, -signal.SIGINT, 0):
                        counts["failed resumes"] += 1
                        counts["notes"].append(f"trial {trial}: SIGINT gave exit {rc}")
                    problems = check_state(run)
                    counts["corrupted"] += bool(problems)
                    counts["notes"] += [f"trial {trial}: {p}" for p in problems]
                    continue
            else:
                rc = child.wait()
            if rc != 0:
                counts["failed resumes"] += 1
                counts["notes"].append(f"trial {trial}: a {'resumed' if resume else 'fresh'} session exited with {rc}")
                break
            if (run / "checkpoint.pt").exists() and load_checkpoint(run / "checkpoint.pt")["epoch"] == args.epochs:
                break
        left = temporaries(run)
        if left:
            counts["corrupted"] += 1
            counts["notes"].append(f"trial {trial}: temporary files left: {[p.name for p in left]}")
        try:
            final = load_checkpoint(run / "checkpoint.pt")
            diff = differences(ref_state, final)
            for snap_name, snap in ref_snapshots.items():
                diff += [f"{snap_name}{d}" for d in differences(snap, load_checkpoint(run / "checkpoints" / snap_name))]
            history = json.loads((run / "history.json").read_text())
            if history != json.loads(json.dumps(final["history"])):
                diff.append("history.json")
        except (CheckpointError, FileNotFoundError, ValueError) as e:
            diff = [str(e)]
        if diff:
            counts["not bitwise"] += 1
            counts["notes"].append(f"trial {trial}: differs from the reference in {diff[:4]}")
        shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(reference, ignore_errors=True)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2, help="interrupted runs per configuration")
    parser.add_argument("--kills", type=int, default=3, help="kills per interrupted run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=sorted(CONFIGS), choices=sorted(CONFIGS), metavar="CONFIG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="directory for the runs (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    flag = mmap.mmap(-1, 2)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ppl_vae_faults_"))
    header = (f"{'configuration':<40} {'kills':>5} {'in writes':>9} {'SIGINT':>6} {'corrupted':>9} {'failed resumes':>14} "
              f"{'not bitwise':>11}")
    print(header)
    total = dict.fromkeys(("kills", "during writes", "sigint", "corrupted", "failed resumes", "not bitwise"), 0)
    start = time.perf_counter()
    try:
        for name in args.configs:
            counts = run_config(name, args, root / name.replace(" ", "_").replace("-", ""), flag, rng)
            for k in total:
                total[k] += counts[k]
            print(f"{name:<40} {counts['kills']:>5} {counts['during writes']:>9} {counts['sigint']:>6} "
                  f"{counts['corrupted']:>9} {counts['failed resumes']:>14} {counts['not bitwise']:>11}", flush=True)
            for note in counts["notes"]:
                print(f"    {note}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'total':<40} {total['kills']:>5} {total['during writes']:>9} {total['sigint']:>6} {total['corrupted']:>9} "
          f"{total['failed resumes']:>14} {total['not bitwise']:>11}")
    print(f"({time.perf_counter() - start:.0f} s; {args.epochs} epochs of 6 steps per run, {args.trials} interrupted "
          f"runs of {args.kills} kills per configuration)")
    return 0 if total["corrupted"] == total["failed resumes"] == total["not bitwise"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
