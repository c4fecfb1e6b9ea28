"""The ``ppl-vae`` command: ``train``, ``evaluate``, ``gap``, ``merge-shards``, ``posterior``, ``plot``.

Examples:

.. code-block:: bash

    ppl-vae train --out runs/vae --epochs 20 --elbo meanfield
    ppl-vae evaluate runs/vae --iwae 5000
    ppl-vae evaluate runs/vae --num-points 100 --ais --bdmc
    ppl-vae gap runs/vae --split test --num-points 1000
    ppl-vae gap runs/vae --num-points 1000 --shard 0/4        # one of 4 shards: gap_test_points_0-250.*
    ppl-vae merge-shards runs/vae/gap/gap_test_points_*.json  # the report of all 1,000 points
    torchrun --nproc_per_node=2 -m ppl_vae.cli gap runs/vae --num-points 1000
    ppl-vae posterior runs/vae --points 0 1 2 3 --guides amortized ffg flow nuts
    ppl-vae plot runs/vae

Each command parses its arguments and calls one library function (:func:`ppl_vae.runs.train_run` and the jobs
of :mod:`ppl_vae.jobs`), so the command and the Python API give the same results.

Errors: one line ``ppl-vae <command>: error: ...`` on stderr naming the option or file; exit status 2 for usage
errors (an option's value, a combination the command refuses, a run that cannot do what was asked) and 1 for
runtime failures (unreadable or corrupt data and checkpoints, a diverged training, the file system); 130 after
Ctrl-C, with a line saying what was kept. ``--debug`` also prints the traceback and debug messages; ``--quiet``
hides progress bars and informational messages. Building the parser imports neither torch nor pyro (``--help``
and argument errors answer at once): the choices below are the library's, checked equal by the tests.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import sys
import traceback
from pathlib import Path

from ppl_vae import __version__

__all__ = ["main", "build_parser"]

DATASETS = ("fashion-mnist", "fashion-mnist-small", "mnist")  # ppl_vae.data.DATASETS
BINARIZATIONS = ("dynamic", "static", "threshold", "none")  # ppl_vae.data.BINARIZATIONS
MODELS = ("vae", "ae", "vqvae", "vaegan", "aae")  # ppl_vae.runs.config.MODELS
GUIDES = ("amortized", "flow", "ffg")  # ppl_vae.runs.config.GUIDES
OBJECTIVES = ("trace", "meanfield", "iwae")  # ppl_vae.runs.config.OBJECTIVES
FLOWS = ("coupling", "iaf", "planar", "radial", "spline")  # ppl_vae.guides.FLOWS
ACTIVATIONS = ("elu", "relu", "softplus", "tanh")  # ppl_vae.nn.ACTIVATIONS
SPLITS = ("train", "valid", "test")  # ppl_vae.jobs.SPLITS
FAMILIES = ("ffg", "flow", "mvn")  # ppl_vae.jobs.FAMILIES
SAMPLERS = ("amortized", "ffg", "flow", "mvn", "nuts")  # ppl_vae.jobs.SAMPLERS
CHECKPOINT = "checkpoint.pt"  # ppl_vae.runs.run.CHECKPOINT
INTERRUPTED = 130  # the shell's status after SIGINT


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line ``<prog>: error: <message>`` (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


# -- argument types: a wrong value is a usage error that names the option ----------------------------------------

def _integer(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


def _number(low: float = 0.0, strict: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected a finite number {'>' if strict else '>='} {low:g}, got {text!r}")
        return value

    return parse


def _valid_size(text: str) -> int | float:
    try:
        count = int(text)
    except ValueError:
        pass
    else:
        if count < 0:
            raise argparse.ArgumentTypeError(f"expected a count >= 0 or a fraction in [0, 1), got {text!r}")
        return count
    try:
        fraction = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count (5000) or a fraction in [0, 1) (0.1), got {text!r}") from None
    if not 0.0 <= fraction < 1.0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or a fraction in [0, 1), got {text!r}")
    return fraction


def _point_range(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+):(\d+)", text)
    if not match or int(match.group(1)) >= int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected a range a:b of point indices with a < b (0:250), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected a shard i/K with 0 <= i < K (0/4 is the first of 4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no file {text!r}" if not Path(text).exists() else f"{text!r} is not a file")
    return text


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def _existing_dir(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no directory {text!r}" if not Path(text).exists() else f"{text!r} is not a directory")
    return text


def _run_dir(text: str) -> str:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no run directory {text!r}" if not path.exists() else f"{text!r} is a file, not a run directory")
    if not (path / CHECKPOINT).is_file():
        raise argparse.ArgumentTypeError(f"{text!r} holds no {CHECKPOINT}: not a run directory (train one with ppl-vae train --out)")
    return text


def _first_existing_parent_is_dir(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{str(path)!r} lies under {str(parent)!r}, which is a file")
            return


def _out_dir(text: str) -> str:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, expected a directory")
    _first_existing_parent_is_dir(path)
    return text


def _out_file(text: str) -> str:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, expected a file")
    _first_existing_parent_is_dir(path)
    return text


# -- the commands: parse, call one library function, show the result -----------------------------------------------

TRAIN_OPTIONS = ("dataset", "data_dir", "binarize", "valid_size", "model", "guide", "z_dim", "hidden", "activation", "elbo",
                 "k", "lr", "batch_size", "epochs", "seed", "device", "flow", "num_flows", "keep_every", "beta",
                 "warmup_steps", "cycle_steps", "free_bits", "gamma")  # the TrainConfig fields set by options


def _train(args) -> int:
    from ppl_vae.runs import TrainConfig, resume_config, train_run

    # options left out take TrainConfig's defaults (one set of defaults for the command line and the API), or, with
    # --resume, the run's own values; a given option that would change a resumed run is refused by name. Ctrl-C
    # (TrainingInterrupted, a KeyboardInterrupt carrying the kept checkpoint and the resume command) reaches main().
    given = {name: getattr(args, name) for name in TRAIN_OPTIONS if getattr(args, name) is not None}
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    config = resume_config(args.out, **given) if args.resume else TrainConfig(**given)
    run = train_run(config, args.out, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 wrote the run
        print(f"run saved in {run.path}")
    return 0


def _ais(args) -> dict:
    return {"ais_steps": (args.ais_steps or 500) if args.ais else 0, "ais_chains": args.ais_chains or 16}


def _on_ranks(args, job):
    """``job(device, shard, progress)`` on this process's share of the points — all of them, ``--shard``'s, or under
    ``torchrun`` the rank's shard — and every rank's result on rank 0 (``None`` on the others)."""
    from ppl_vae.distributed import gather_to_first, process_group

    with process_group(args.device) as group:
        if not group.distributed:
            return [job(args.device, args.shard, not args.quiet)]
        if args.shard is not None:
            raise ValueError(f"--shard {args.shard[0]}/{args.shard[1]} under torchrun: the processes are the shards "
                             f"(leave --shard out, or run the shards as separate commands)")
        try:
            result = job(group.device, (group.rank, group.world_size), not args.quiet and group.is_first)
        except Exception as error:  # every rank must reach the gather, or the others wait for ever
            result = error
        results = gather_to_first(group, result)
        if not group.is_first:
            if isinstance(result, Exception):
                raise result
            return None
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise failed[0]
        return results


def _evaluate(args) -> int:
    from ppl_vae.jobs import Evaluation, check_output_file, evaluate_run, merge_evaluations
    from ppl_vae.jobs.inputs import range_suffix

    if args.out:
        check_output_file(args.out, "--out")

    def job(device, shard, progress):
        result = evaluate_run(args.run, args.split, args.n, num_samples=args.samples, iwae_samples=args.iwae,
                              ais_leapfrog=args.ais_leapfrog or 10, ais_from_guide=args.ais_from_guide,
                              prior_mc_samples=args.prior_mc, bdmc_steps=(args.ais_steps or 500) if args.bdmc else 0,
                              seed=args.seed, device=device, progress=progress, points=args.points, shard=shard,
                              **_ais(args))
        return result.to_dict()

    results = _on_ranks(args, job)
    if results is None:
        return 0
    parts = [Evaluation.from_dict(r) for r in results]
    result = parts[0] if len(parts) == 1 else merge_evaluations(parts)
    out = Path(args.out) if args.out else Path(args.run) / f"evaluation_{args.split}.json"
    if args.points is not None or args.shard is not None:  # a shard's file is named by its points
        out = check_output_file(out.with_name(out.stem + range_suffix(*result.meta["points"]) + out.suffix), "--out")
    result.save(out)
    print(result.table())
    return 0


def _gap(args) -> int:
    from ppl_vae.jobs import GapReport, gap_over_training, gap_run, merge_gap_reports, save_gap_over_training, save_gap_report

    out = Path(args.out) if args.out else Path(args.run) / "gap"
    options = dict(families=args.families, eval_samples=args.eval_samples, init=args.init, max_steps=args.max_steps,
                   lr=args.lr, local_samples=args.local_samples, seed=args.seed, **_ais(args))
    if args.over_training:
        from ppl_vae.distributed import launched_by_torchrun

        if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
            raise ValueError("--over-training runs on one process: start it without torchrun")
        result = gap_over_training(args.run, args.split[0], args.n or 1000, device=args.device,
                                   progress=not args.quiet, **options)
        save_gap_over_training(result, out)
        print(result.table())
        return 0

    def job(device, shard, progress):
        return gap_run(args.run, args.split, args.n, device=device, progress=progress, points=args.points, shard=shard,
                       **options).to_dict()

    results = _on_ranks(args, job)
    if results is None:
        return 0
    reports = [GapReport.from_dict(r) for r in results]
    result = reports[0] if len(reports) == 1 else merge_gap_reports(reports)
    save_gap_report(result, out, shard=args.points is not None or args.shard is not None)
    print(result.table())
    return 0


def _merge_shards(args) -> int:
    import json

    from ppl_vae.jobs import load_evaluation, load_gap_report, merge_evaluations, merge_gap_reports, save_gap_report

    kinds = {}
    for path in args.shards:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise ValueError(f"Expected shard reports (JSON), but {path!r} is not valid JSON") from None
        kind = "gap" if isinstance(data, dict) and "columns" in data else \
            "evaluation" if isinstance(data, dict) and "estimates" in data else None
        if kind is None:
            raise ValueError(f"Expected a shard report of ppl-vae gap or evaluate, but {path!r} is neither")
        kinds.setdefault(kind, []).append(path)
    if len(kinds) > 1:
        raise ValueError(f"Expected shard reports of one kind, got gap reports {kinds['gap']} and evaluations "
                         f"{kinds['evaluation']}")
    out = Path(args.out) if args.out else Path(args.shards[0]).parent
    if "gap" in kinds:
        result = merge_gap_reports([load_gap_report(p) for p in args.shards])
        save_gap_report(result, out)
    else:
        result = merge_evaluations([load_evaluation(p) for p in args.shards])
        result.save(out / f"evaluation_{result.meta['split']}.json")
    print(result.table())
    return 0


def _posterior(args) -> int:
    from ppl_vae.jobs import posterior_run

    out = Path(args.out) if args.out else Path(args.run) / "posterior"
    report = posterior_run(args.run, args.points, args.split, guides=args.guides, chains=args.chains, draws=args.draws,
                           warmup=args.warmup, max_steps=args.max_steps, seed=args.seed, device=args.device,
                           progress=not args.quiet)
    report.save(out)
    print(report.markdown(), end="")
    return 0


def _plot(args) -> int:
    from ppl_vae.jobs import plot_run

    out = Path(args.out) if args.out else Path(args.run) / "figures"
    for path in plot_run(args.run, out, n=args.n, seed=args.seed, device=args.device):
        print(f"saved {path}")
    return 0


def _check_combinations(args) -> None:
    """Options that apply only with another one, or that the command cannot honour together: refused by name."""
    error = args.subparser.error
    if args.command in ("evaluate", "gap") and not (args.ais or getattr(args, "bdmc", False)):
        given = [f"--{name.replace('_', '-')}" for name in ("ais_steps", "ais_chains", "ais_leapfrog", "ais_from_guide")
                 if getattr(args, name, None)]
        if given:
            error(f"argument {given[0]}: applies only with --ais" + (" or --bdmc" if args.command == "evaluate" else ""))
    if args.command in ("evaluate", "gap") and args.points is not None and args.n is not None:
        error("argument --points: not with --num-points (--n): give the first n points or a range")
    if args.command == "evaluate" and args.bdmc and (args.points is not None or args.shard is not None
                                                    or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        error("argument --bdmc: runs on points it simulates from the model, which shards and processes cannot "
              "merge: run it on one process, without --points or --shard")
    if args.command == "gap" and args.over_training and (args.points is not None or args.shard is not None):
        error(f"argument {'--points' if args.points is not None else '--shard'}: not with --over-training, which "
              "measures the first --num-points points at every checkpoint")
    if args.command == "gap" and args.over_training and len(args.split) > 1:
        error(f"argument --over-training: measures one split, got --split {' '.join(args.split)}")
    if args.command == "gap" and len(set(args.split)) != len(args.split):
        error(f"argument --split: expected distinct splits, got {' '.join(args.split)}")
    if args.command == "gap" and len(set(args.families)) != len(args.families):
        error(f"argument --families: expected distinct families, got {' '.join(args.families)}")
    if args.command == "posterior":
        for option, values in (("--points", args.points), ("--guides", args.guides)):
            if len(set(values)) != len(values):
                error(f"argument {option}: expected distinct values, got {' '.join(map(str, values))}")
    if args.command == "train" and args.resume and not (Path(args.out) / CHECKPOINT).is_file():
        error(f"argument --resume: {args.out!r} holds no {CHECKPOINT} to resume")
    if args.command == "train" and args.data_dir is not None and args.dataset in (None, "fashion-mnist-small"):
        error("argument --data-dir: applies to --dataset mnist or fashion-mnist, not the embedded fashion-mnist-small")


def _common(seed: int | None = 0, device: str | None = "cpu") -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--device", default=device, type=_device, help="cpu, cuda, cuda:N or mps (default cpu)")
    common.add_argument("--seed", type=_integer(0), default=seed, help="default 0")
    common.add_argument("--quiet", action="store_true", help="no progress bars or informational messages")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error, and debug messages")
    return common


def _messages_only() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no informational messages")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error, and debug messages")
    return common


def _point_options(parser, split: str, default: str, output: str) -> None:
    """``--num-points`` (``--n``), ``--points A:B`` and ``--shard I/K``: which points of the split(s) a job measures."""
    parser.add_argument("--num-points", "--n", dest="n", type=_integer(1), default=None,
                        help=f"the first n points {split} (default {default}); --n is short for it (not under torchrun)")
    parser.add_argument("--points", type=_point_range, default=None, metavar="A:B",
                        help=f"the points A to B-1 {split} instead; writes a shard {output} named by them")
    parser.add_argument("--shard", type=_shard, default=None, metavar="I/K",
                        help="only shard I (0-based) of K contiguous shards of those points; merge with merge-shards")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ppl-vae`` (imports neither torch nor pyro).

    :returns: the parser; each subcommand's namespace carries ``func`` (the command) and ``subparser``.
    """
    parser = _Parser(prog="ppl-vae", description="Variational autoencoders in Pyro and their inference gap.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, and debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    common = _common()
    train_common = _common(seed=None, device=None)  # train: TrainConfig's defaults
    positive, natural = _integer(1), _integer(0)

    t = sub.add_parser("train", parents=[train_common], help="train a VAE with SVI and save a run directory",
                       description="Options left out take the defaults of ppl_vae.runs.TrainConfig (named in the help), "
                                   "or with --resume the run's own values.")
    t.add_argument("--out", required=True, type=_out_dir, help="run directory")
    t.add_argument("--dataset", default=None, choices=DATASETS, help="default fashion-mnist-small")
    t.add_argument("--data-dir", default=None, type=_existing_dir,
                   help="the directory with the IDX files, and the only one looked in (else $PPL_VAE_DATA, cache, "
                        "/usr/share/datasets)")
    t.add_argument("--binarize", default=None, choices=BINARIZATIONS, help="default dynamic")
    t.add_argument("--valid-size", default=None, type=_valid_size,
                   help="held-out training images: a count (5000) or a fraction in [0, 1) (default 0.1)")
    t.add_argument("--model", default=None, choices=MODELS,
                   help="vae (default); ae: deterministic autoencoder; vqvae; vaegan: VAE-GAN; aae: adversarial autoencoder")
    t.add_argument("--beta", type=_number(), default=None, help="weight of the KL term (beta-VAE); the warm-up's final value (default 1)")
    t.add_argument("--warmup-steps", type=natural, default=None, help="linear KL warm-up over this many steps")
    t.add_argument("--cycle-steps", type=natural, default=None, help="cyclical KL annealing with this period (steps)")
    t.add_argument("--free-bits", type=_number(), default=None, metavar="LAMBDA",
                   help="free bits: KL floor per latent dimension (nats; with --elbo meanfield)")
    t.add_argument("--gamma", type=_number(), default=None, help="VAE-GAN: weight of the feature likelihood for the decoder (default 1)")
    t.add_argument("--z-dim", type=positive, default=None, help="default 50")
    t.add_argument("--hidden", type=positive, nargs="+", default=None, help="default 200 200")
    t.add_argument("--activation", default=None, choices=ACTIVATIONS, help="default elu")
    t.add_argument("--elbo", default=None, choices=OBJECTIVES,
                   help="trace (default): Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL); iwae: per-point IWAE bound")
    t.add_argument("--k", type=positive, default=None, help="particles per data point (IWAE's K; default 1)")
    t.add_argument("--guide", default=None, choices=GUIDES,
                   help="amortized (default): FFG encoder; flow: encoder + conditional flows; ffg: per-datapoint Gaussians")
    t.add_argument("--flow", default=None, choices=FLOWS, help="transform of --guide flow (default iaf)")
    t.add_argument("--num-flows", type=positive, default=None, help="transforms of --guide flow (default 2)")
    t.add_argument("--keep-every", type=natural, default=None, metavar="E",
                   help="also keep checkpoints/epoch_XXXX.pt every E epochs (for gaps over training)")
    t.add_argument("--lr", type=_number(strict=True), default=None, help="Adam learning rate (default 0.001)")
    t.add_argument("--batch-size", type=positive, default=None, help="default 100")
    t.add_argument("--epochs", type=natural, default=None, help="default 10")
    t.add_argument("--resume", action="store_true", help="continue the run in --out up to --epochs")
    t.set_defaults(func=_train, subparser=t)

    e = sub.add_parser("evaluate", parents=[common], help="estimate the test ELBO (and IWAE bound) of a run")
    e.add_argument("run", type=_run_dir)
    e.add_argument("--split", default="test", choices=SPLITS)
    _point_options(e, "of the split", "all", "file")
    e.add_argument("--samples", type=positive, default=1, help="Monte-Carlo samples per point for the ELBO")
    e.add_argument("--iwae", type=natural, default=0, metavar="K", help="also the IWAE bound with K samples")
    e.add_argument("--ais", action="store_true", help="also annealed importance sampling (HMC transitions)")
    e.add_argument("--ais-steps", type=positive, default=None, help="AIS intermediate distributions (default 500)")
    e.add_argument("--ais-chains", type=positive, default=None, help="AIS chains per data point (default 16)")
    e.add_argument("--ais-leapfrog", type=positive, default=None, help="leapfrog steps per HMC transition (default 10)")
    e.add_argument("--ais-from-guide", action="store_true", help="start AIS from the guide instead of the prior")
    e.add_argument("--bdmc", action="store_true",
                   help="also bidirectional Monte Carlo at the AIS settings: forward (lower) and reverse (upper) AIS "
                        "bounds on as many points simulated from the run's model")
    e.add_argument("--prior-mc", type=natural, default=0, metavar="S", help="also the naive prior Monte-Carlo estimate")
    e.add_argument("--out", default=None, type=_out_file, help="JSON path (default RUN/evaluation_<split>.json)")
    e.set_defaults(func=_evaluate, subparser=e)

    g = sub.add_parser("gap", parents=[common], help="measure the inference gap: approximation and amortization "
                                                     "(Cremer et al. 2018)")
    g.add_argument("run", type=_run_dir)
    g.add_argument("--split", nargs="+", default=["test"], choices=SPLITS,
                   help="one column per split (e.g. --split train test: how well the encoder generalizes)")
    _point_options(g, "of each split", "1000", "report")
    g.add_argument("--families", nargs="+", default=["ffg", "flow"], choices=FAMILIES, help="per-datapoint families q* to fit")
    g.add_argument("--eval-samples", type=_integer(2), default=5000, help="samples per point for every final bound")
    g.add_argument("--init", default="guide", choices=("guide", "prior"), help="start q* at the encoder or the prior")
    g.add_argument("--max-steps", type=positive, default=3000, help="cap on q* optimization steps")
    g.add_argument("--lr", type=_number(strict=True), default=1e-2, help="Adam learning rate of q*")
    g.add_argument("--local-samples", type=positive, default=8, help="samples per point per q* step")
    g.add_argument("--ais", action="store_true", help="include AIS in log p̂(x)")
    g.add_argument("--ais-steps", type=positive, default=None, help="AIS intermediate distributions (default 500)")
    g.add_argument("--ais-chains", type=positive, default=None, help="AIS chains per data point (default 16)")
    g.add_argument("--over-training", action="store_true", help="gaps at every kept checkpoint (--keep-every)")
    g.add_argument("--out", default=None, type=_out_dir, help="report directory (default RUN/gap)")
    g.set_defaults(func=_gap, subparser=g)

    m = sub.add_parser("merge-shards", parents=[_messages_only()],
                       help="combine the shard reports of gap or evaluate (--points, --shard) into the report of all "
                            "their points",
                       description="Writes exactly the report (JSON, Markdown, figures) that one run on all the points "
                                   "writes: gap_<splits>.* or evaluation_<split>.json.")
    m.add_argument("shards", nargs="+", type=_existing_file, help="the shards' JSON files, in any order")
    m.add_argument("--out", default=None, type=_out_dir, help="directory (default: the first shard's)")
    m.set_defaults(func=_merge_shards, subparser=m)

    q = sub.add_parser("posterior", parents=[common],
                       help="posterior samples of guides and NUTS as ArviZ InferenceData, diagnostics, figures")
    q.add_argument("run", type=_run_dir)
    q.add_argument("--points", type=natural, nargs="+", default=[0, 1, 2, 3], help="data-point indices in the split")
    q.add_argument("--split", default="test", choices=SPLITS)
    q.add_argument("--guides", nargs="+", default=["amortized", "ffg", "flow", "nuts"], choices=SAMPLERS,
                   help="amortized: the run's encoder; ffg/flow/mvn: q* fitted per point; nuts: Pyro's NUTS reference")
    q.add_argument("--chains", type=positive, default=4)
    q.add_argument("--draws", type=positive, default=500)
    q.add_argument("--warmup", type=natural, default=500, help="NUTS warm-up steps per chain")
    q.add_argument("--max-steps", type=positive, default=3000, help="cap on q* optimization steps")
    q.add_argument("--out", default=None, type=_out_dir, help="directory (default RUN/posterior)")
    q.set_defaults(func=_posterior, subparser=q)

    p = sub.add_parser("plot", parents=[common], help="save figures of a run (prior samples, reconstructions, latent "
                                                      "space, curves)")
    p.add_argument("run", type=_run_dir)
    p.add_argument("--n", type=positive, default=2000, help="at most n test points in the latent-space scatter")
    p.add_argument("--out", default=None, type=_out_dir, help="figure directory (default RUN/figures)")
    p.set_defaults(func=_plot, subparser=p)
    return parser


# -- errors, interruptions and messages ---------------------------------------------------------------------------

def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _status(error: Exception) -> tuple[int, str]:
    """Exit status and message: 1 for runtime failures, 2 for usage errors (a ``ValueError`` about the arguments)."""
    from ppl_vae.data import DataError
    from ppl_vae.runs.checkpoint import CheckpointError
    from ppl_vae.training.trainer import TrainingDiverged

    if isinstance(error, (CheckpointError, DataError, TrainingDiverged, OSError)):
        return 1, _one_line(error)
    if isinstance(error, ValueError):
        return 2, _one_line(error)
    return 1, f"unexpected {type(error).__name__}: {_one_line(error)} (rerun with --debug for the traceback)"


def _interrupted(args, interrupt: KeyboardInterrupt) -> str:
    if str(interrupt):  # the library said what it kept
        return f"interrupted; {_one_line(interrupt)}"
    if args.command != "train":
        return "interrupted; nothing was written"
    from ppl_vae.runs.checkpoint import load_checkpoint

    path = Path(args.out) / CHECKPOINT
    try:
        state = load_checkpoint(path)
        epoch, epochs = state["epoch"], args.epochs if args.epochs is not None else state["config"]["epochs"]
    except Exception:  # no checkpoint yet, or one we cannot read: say so rather than guess
        return f"interrupted before a checkpoint was written; nothing to resume in {args.out}"
    return (f"interrupted; the checkpoint of epoch {epoch} is kept in {path}; continue with: "
            f"ppl-vae train --out {args.out} --epochs {epochs} --resume")


@contextlib.contextmanager
def _messages(args):
    """The library's log records on stderr (it installs no handler): INFO by default, WARNING with ``--quiet``, DEBUG
    with ``--debug``; routed through tqdm so that they do not break progress bars."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    logger = logging.getLogger("ppl_vae")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s" if args.debug else "%(message)s"))
    level = logger.level
    quiet = args.quiet or os.environ.get("RANK", "0") != "0"  # under torchrun, rank 0 speaks for all
    logger.setLevel(logging.DEBUG if args.debug else logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    try:
        with logging_redirect_tqdm([logger]):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run ``ppl-vae`` with ``argv`` (default ``sys.argv[1:]``).

    :param argv: the arguments.
    :returns: the exit status: 0 success, 1 runtime failure, 2 usage error, 130 interrupted.
    """
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the command's parser ("ppl-vae train: error: ..."), not the top one
            args.subparser.error(f"unrecognized arguments: {' '.join(unknown)}")
        _check_combinations(args)
    except SystemExit as done:  # --help and --version (0), usage errors (2): argparse has printed the message
        return done.code if isinstance(done.code, int) else 0
    prog = f"ppl-vae {args.command}"
    with _messages(args):
        try:
            return args.func(args)
        except KeyboardInterrupt as interrupt:
            if args.debug:
                traceback.print_exc()
            print(f"{prog}: {_interrupted(args, interrupt)}", file=sys.stderr)
            return INTERRUPTED
        except Exception as error:
            if args.debug:
                traceback.print_exc()
            status, message = _status(error)
            print(f"{prog}: error: {message}", file=sys.stderr)
            return status


if __name__ == "__main__":
    sys.exit(main())
