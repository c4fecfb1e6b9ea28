"""The ``ppl-vae`` command: ``train``, ``evaluate``, ``gap``, ``posterior``, ``plot``.

Examples::

    ppl-vae train --out runs/vae --epochs 20 --elbo meanfield
    ppl-vae evaluate runs/vae --iwae 5000
    ppl-vae gap runs/vae --split test --n 1000
    ppl-vae posterior runs/vae --points 0 1 2 3 --guides amortized ffg flow nuts
    ppl-vae plot runs/vae
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _train(args) -> int:
    from ppl_vae.runs import TrainingInterrupted, resume_config, train_run
    from ppl_vae.runs.config import TrainConfig

    # options left out take TrainConfig's defaults (one set of defaults for the CLI and the API), or, with
    # --resume, the run's own values; a given option that would change a resumed run is refused by name
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra"]
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    if "valid_size" in given:
        given["valid_size"] = float(args.valid_size) if "." in args.valid_size else int(args.valid_size)
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    try:
        config = resume_config(args.out, **given) if args.resume else TrainConfig(**given)
        run = train_run(config, args.out, resume=args.resume, progress=not args.quiet)
    except TrainingInterrupted as e:
        print(f"ppl-vae train: interrupted: {e}", file=sys.stderr)
        return 130
    print(f"run saved in {run.path}")
    return 0


def _evaluate(args) -> int:
    import torch

    from ppl_vae.estimators import ais, elbo, iwae_bound, prior_mc
    from ppl_vae.runs import load_run
    from ppl_vae.runs.checkpoint import atomic_write_bytes

    run = load_run(args.run, args.device)
    if not run.amortized and args.split != "train":
        raise ValueError(f"The run's guide {run.config.guide!r} is per-datapoint (trained on the training points "
                         "only): evaluate --split train, or measure test bounds with `ppl-vae gap`, which fits q* "
                         "for each test point")
    split = getattr(run.splits(), args.split)
    x = split.x if args.n is None else split.x[: args.n]
    torch.manual_seed(args.seed)
    results = [elbo(run.model, run.guide, x, num_samples=args.samples)]
    if args.iwae:
        results.append(iwae_bound(run.model, run.guide, x, num_samples=args.iwae, progress=not args.quiet))
    if args.ais:
        results.append(ais(run.model, x, guide=run.guide if args.ais_from_guide else None, num_chains=args.ais_chains,
                           num_steps=args.ais_steps, leapfrog_steps=args.ais_leapfrog, progress=not args.quiet))
    if args.prior_mc:
        results.append(prior_mc(run.model, x, num_samples=args.prior_mc))
    report = {"run": str(run.path), "split": args.split, "num_points": x.shape[0], "seed": args.seed,
              "estimates": {r.name: r.to_dict() for r in results}}
    if run.config.model != "vae":
        report["note"] = (f"--model {run.config.model}: the 'elbo' is its Pyro objective (reconstruction or "
                          "feature likelihood), not a bound on log p(x)")
        print(report["note"])
    bounds = [r for r in results if r.name.startswith(("iwae", "ais"))]
    if bounds:  # log p-hat(x): per point, the best of the strong estimators (Cremer et al. 2018)
        best = torch.stack([r.per_point for r in bounds]).max(0).values
        from ppl_vae.estimators import Estimate

        results.append(Estimate("log_p_hat", best, {"from": [r.name for r in bounds]}))
        report["estimates"]["log_p_hat"] = results[-1].to_dict()
    out = Path(args.out) if args.out else run.path / f"evaluation_{args.split}.json"
    atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"{'estimator':<20} {'nats/point':>12} {'± s.e.':>8}   ({x.shape[0]} {args.split} points)")
    for r in results:
        print(f"{r.name:<20} {r.mean:>12.3f} {r.stderr:>8.3f}")
    print(f"written {out}")
    return 0


def _plot(args) -> int:
    import torch

    from ppl_vae.figures import samples as plots
    from ppl_vae.figures.training import plot_collapse, plot_history
    from ppl_vae.runs import load_run

    run = load_run(args.run, args.device)
    test = run.splits().test if run.amortized else run.splits().train  # per-datapoint guides know train points only
    out = Path(args.out) if args.out else run.path / "figures"
    torch.manual_seed(args.seed)
    paths = [plots.plot_prior_samples(run.model, out / "prior_samples.png"),
             plot_history(run.history, out / "elbo_curves.png")]
    if hasattr(run.model, "decode") and run.config.model != "vqvae":  # models with a continuous latent site
        paths.append(plots.plot_reconstructions(run.model, run.guide, test.x, out / "reconstructions.png"))
        paths.append(plots.plot_latent_space(run.guide, test.x[: args.n], test.labels[: args.n], out / "latent_space.png"))
    if run.history.get("kl_per_dim"):
        paths.append(plot_collapse(torch.tensor(run.history["kl_per_dim"]), out / "kl_per_dimension.png",
                                   title=f"KL per latent dimension over training (active units at the end: "
                                         f"{run.history['active_units'][-1]})"))
    for p in paths:
        print(f"saved {p}")
    return 0


def _gap(args) -> int:
    import torch

    from ppl_vae.figures.gap import plot_gap_bars, plot_gap_over_training, plot_semi_amortized
    from ppl_vae.gap import inference_gap, markdown_table
    from ppl_vae.runs import kept_checkpoints, load_run
    from ppl_vae.runs.checkpoint import atomic_write_bytes

    run = load_run(args.run, args.device)
    if not run.amortized:
        raise ValueError(f"The run's guide {run.config.guide!r} is not amortized: there is no L[q] to decompose")
    splits = run.splits()
    out = Path(args.out) if args.out else run.path / "gap"
    local = {"max_steps": args.max_steps, "lr": args.lr, "num_samples": args.local_samples}
    common = dict(families=args.families, eval_samples=args.eval_samples, init=args.init, use_ais=args.ais,
                  ais_kwargs={"num_steps": args.ais_steps, "num_chains": args.ais_chains}, local_kwargs=local,
                  seed=args.seed, progress=not args.quiet)

    def points(split):
        data = getattr(splits, split)
        return data.x[: args.n], torch.arange(min(args.n, len(data)), device=data.x.device)

    if args.over_training:
        paths = kept_checkpoints(run.path)
        if not paths:
            raise ValueError(f"{run.path} kept no checkpoints: train with --keep-every E")
        epochs, gaps = [], []
        for path in paths:
            r = load_run(args.run, args.device, checkpoint=path)
            x, idx = points(args.split[0])
            gaps.append(inference_gap(r.model, r.guide, x, idx, **common))
            epochs.append(r.epoch)
            print(f"epoch {r.epoch}: approximation {gaps[-1].approximation_gap().mean():.2f}  "
                  f"amortization {gaps[-1].amortization_gap().mean():.2f}")
        report = {"epochs": epochs, "gaps": [g.to_dict(per_point=False) for g in gaps]}
        atomic_write_bytes(out / "gap_over_training.json", (json.dumps(report, indent=2) + "\n").encode())
        print(f"saved {plot_gap_over_training(epochs, gaps, out / 'gap_over_training.png')}")
        return 0

    columns = {}
    for split in args.split:
        x, idx = points(split)
        columns[f"{split} ({x.shape[0]} points)"] = inference_gap(run.model, run.guide, x, idx, **common)
    table = markdown_table(columns)
    header = (f"Inference gap of `{run.path}` (epoch {run.epoch}, guide {run.config.guide}, dataset "
              f"{run.config.dataset}, binarization {run.config.binarize}); bounds with {args.eval_samples} samples "
              f"per point, q* fitted from the {args.init} with Adam (lr {args.lr}, {args.local_samples} samples/step, "
              f"at most {args.max_steps} steps); log p̂(x) is the per-point best of "
              f"{', '.join(next(iter(columns.values())).info['log_p_hat_from'])}.\n\n")
    report = {"run": str(run.path), "epoch": run.epoch, "columns": {k: g.to_dict() for k, g in columns.items()}}
    name = "gap_" + "_".join(args.split)
    atomic_write_bytes(out / f"{name}.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(out / f"{name}.md", (header + table + "\n").encode())
    print(table)
    print(f"saved {out / f'{name}.json'}, {out / f'{name}.md'}")
    print(f"saved {plot_gap_bars(columns, out / f'{name}.png')}")
    first = next(iter(columns.values()))
    if first.curve:
        print(f"saved {plot_semi_amortized(first, out / f'semi_amortized_{args.split[0]}.png')}")
    return 0


def _posterior(args) -> int:
    import os
    import tempfile

    import torch

    from ppl_vae import posterior as post
    from ppl_vae.figures import posterior as figs
    from ppl_vae.gap.local_fit import fit_local_guide
    from ppl_vae.runs import load_run
    from ppl_vae.runs.checkpoint import atomic_write_bytes

    run = load_run(args.run, args.device)
    data = getattr(run.splits(), args.split)
    bad = [p for p in args.points if not 0 <= p < len(data)]
    if bad:
        raise ValueError(f"--points {bad} are outside the {args.split} split's {len(data)} points")
    if "amortized" in args.guides and not run.amortized:
        raise ValueError(f"The run's guide {run.config.guide!r} is not amortized: drop 'amortized' from --guides")
    idx = torch.tensor(args.points, device=data.x.device)
    x = data.x[idx]
    out = Path(args.out) if args.out else run.path / "posterior"
    torch.manual_seed(args.seed)
    draws, guides, nuts = {}, {}, None
    for name in args.guides:
        if name == "nuts":
            draws["nuts"], _ = post.nuts_draws(run.model, x, idx, args.chains, args.draws, args.warmup, args.seed,
                                               progress=not args.quiet)
            nuts = draws["nuts"]["latents"]
            continue
        if name == "amortized":
            guide, gidx = run.guide, idx
        else:
            fit = fit_local_guide(run.model, x, name, init_guide=run.guide if run.amortized else None,
                                  max_steps=args.max_steps, seed=args.seed)
            guide, gidx = fit.guide, torch.arange(len(idx), device=x.device)
        guides[name] = (guide, gidx)
        draws[name] = post.guide_draws(run.model, guide, x, gidx, args.chains, args.draws)
    idata = post.to_inference_data(draws, x, idx, attrs={"run": str(run.path), "split": args.split})
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".nc.tmp")
    os.close(fd)
    idata.to_netcdf(tmp)
    os.replace(tmp, out / "posterior.nc")
    rows = post.diagnostics(idata)
    cols = ["datapoint", "sampler", "elbo", "iwae", "khat", "log_p_hat", "gap", "r_hat_max", "ess_bulk_min"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |")
    table = "\n".join(lines)
    note = ("Per data point and sampler: ELBO and IWAE from the draws, Pareto k̂ of the weights p(x,z)/q(z|x) "
            "(> 0.7: unreliable), log p̂(x) = best IWAE with k̂ < 0.7, gap = log p̂(x) − ELBO (≈ KL(q || p(z|x))), "
            "worst R-hat and ESS of NUTS over the point's latent dimensions.\n\n")
    atomic_write_bytes(out / "diagnostics.md", (note + table + "\n").encode())
    atomic_write_bytes(out / "diagnostics.json", (json.dumps(rows, indent=2) + "\n").encode())
    print(table)
    saved = [out / "posterior.nc", out / "diagnostics.md"]
    site = next(iter(draws[next(iter(draws))]["latents"]))
    dims = tuple(range(min(4, draws[next(iter(draws))]["latents"][site].shape[-1])))
    saved.append(figs.plot_samplers_forest(idata, out / "forest.png", site, dims=dims))
    saved.append(figs.plot_samplers_pair(idata, out / "pair.png", site, dims=dims[:2]))
    if nuts is not None:
        saved.append(figs.plot_nuts_posterior(idata, out / "nuts_posterior.png", site, dims=dims))
    if getattr(run.model, "z_dim", None) == 2:
        extra = {} if nuts is None else {"NUTS": nuts[site].reshape(-1, *nuts[site].shape[2:])[::4]}
        saved.append(figs.plot_posterior_grid(run.model, guides, x, out / "posterior_grid.png", labels=idx, draws=extra))
        saved.append(figs.plot_manifold(run.model, out / "manifold.png"))
    for p in saved:
        print(f"saved {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ppl_vae.data import BINARIZATIONS, DATASETS
    from ppl_vae.guides import FLOWS
    from ppl_vae.runs.config import GUIDES, MODELS, OBJECTIVES

    parser = argparse.ArgumentParser(prog="ppl-vae", description="Variational autoencoders in Pyro and their inference gap.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE with SVI and save a run directory",
                       description="Options left out take the defaults of ppl_vae.runs.TrainConfig (shown), or with "
                                   "--resume the run's own values.")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--dataset", default=None, choices=sorted(DATASETS), help="default fashion-mnist-small")
    t.add_argument("--data-dir", default=None, help="directory with the IDX files (else $PPL_VAE_DATA, cache, /usr/share/datasets)")
    t.add_argument("--binarize", default=None, choices=BINARIZATIONS, help="default dynamic")
    t.add_argument("--valid-size", default=None, help="held-out training images: a count (5000) or a fraction (default 0.1)")
    t.add_argument("--model", default=None, choices=MODELS,
                   help="vae (default); ae: deterministic autoencoder; vqvae; vaegan: VAE-GAN; aae: adversarial autoencoder")
    t.add_argument("--beta", type=float, default=None, help="weight of the KL term (beta-VAE); the warm-up's final value (default 1)")
    t.add_argument("--warmup-steps", type=int, default=None, help="linear KL warm-up over this many steps")
    t.add_argument("--cycle-steps", type=int, default=None, help="cyclical KL annealing with this period (steps)")
    t.add_argument("--free-bits", type=float, default=None, metavar="LAMBDA",
                   help="free bits: KL floor per latent dimension (nats; with --elbo meanfield)")
    t.add_argument("--gamma", type=float, default=None, help="VAE-GAN: weight of the feature likelihood for the decoder (default 1)")
    t.add_argument("--z-dim", type=int, default=None, help="default 50")
    t.add_argument("--hidden", type=int, nargs="+", default=None, help="default 200 200")
    t.add_argument("--activation", default=None, help="default elu")
    t.add_argument("--elbo", default=None, choices=OBJECTIVES,
                   help="trace (default): Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL); iwae: per-point IWAE bound")
    t.add_argument("--k", type=int, default=None, help="particles per data point (IWAE's K; default 1)")
    t.add_argument("--guide", default=None, choices=GUIDES,
                   help="amortized (default): FFG encoder; flow: encoder + conditional flows; ffg: per-datapoint Gaussians")
    t.add_argument("--flow", default=None, choices=sorted(FLOWS), help="transform of --guide flow (default iaf)")
    t.add_argument("--num-flows", type=int, default=None, help="transforms of --guide flow (default 2)")
    t.add_argument("--keep-every", type=int, default=None, metavar="E",
                   help="also keep checkpoints/epoch_XXXX.pt every E epochs (for gaps over training)")
    t.add_argument("--lr", type=float, default=None, help="default 1e-3")
    t.add_argument("--batch-size", type=int, default=None, help="default 100")
    t.add_argument("--epochs", type=int, default=None, help="default 10")
    t.add_argument("--seed", type=int, default=None, help="default 0")
    t.add_argument("--device", default=None, help="cpu (default) or cuda")
    t.add_argument("--resume", action="store_true", help="continue the run in --out up to --epochs")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="estimate the test ELBO (and IWAE bound) of a run")
    e.add_argument("run")
    e.add_argument("--split", default="test", choices=("train", "valid", "test"))
    e.add_argument("--n", type=int, default=None, help="first n points of the split (default: all)")
    e.add_argument("--samples", type=int, default=1, help="Monte-Carlo samples per point for the ELBO")
    e.add_argument("--iwae", type=int, default=0, metavar="K", help="also the IWAE bound with K samples")
    e.add_argument("--ais", action="store_true", help="also annealed importance sampling (HMC transitions)")
    e.add_argument("--ais-steps", type=int, default=500, help="AIS intermediate distributions")
    e.add_argument("--ais-chains", type=int, default=16, help="AIS chains per data point")
    e.add_argument("--ais-leapfrog", type=int, default=10, help="leapfrog steps per HMC transition")
    e.add_argument("--ais-from-guide", action="store_true", help="start AIS from the guide instead of the prior")
    e.add_argument("--prior-mc", type=int, default=0, metavar="S", help="also the naive prior Monte-Carlo estimate")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", default=None, help="JSON path (default RUN/evaluation_<split>.json)")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)

    g = sub.add_parser("gap", help="measure the inference gap: approximation and amortization (Cremer et al. 2018)")
    g.add_argument("run")
    g.add_argument("--split", nargs="+", default=["test"], choices=("train", "valid", "test"),
                   help="one column per split (e.g. --split train test: how well the encoder generalizes)")
    g.add_argument("--n", type=int, default=1000, help="first n points of each split")
    g.add_argument("--families", nargs="+", default=["ffg", "flow"], choices=("ffg", "flow", "mvn"),
                   help="per-datapoint families q* to fit")
    g.add_argument("--eval-samples", type=int, default=5000, help="samples per point for every final bound")
    g.add_argument("--init", default="guide", choices=("guide", "prior"), help="start q* at the encoder or the prior")
    g.add_argument("--max-steps", type=int, default=3000, help="cap on q* optimization steps")
    g.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate of q*")
    g.add_argument("--local-samples", type=int, default=8, help="samples per point per q* step")
    g.add_argument("--ais", action="store_true", help="include AIS in log p̂(x)")
    g.add_argument("--ais-steps", type=int, default=500)
    g.add_argument("--ais-chains", type=int, default=16)
    g.add_argument("--over-training", action="store_true", help="gaps at every kept checkpoint (--keep-every)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.add_argument("--out", default=None, help="report directory (default RUN/gap)")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=_gap)

    q = sub.add_parser("posterior", help="posterior samples of guides and NUTS as ArviZ InferenceData, diagnostics, figures")
    q.add_argument("run")
    q.add_argument("--points", type=int, nargs="+", default=[0, 1, 2, 3], help="data-point indices in the split")
    q.add_argument("--split", default="test", choices=("train", "valid", "test"))
    q.add_argument("--guides", nargs="+", default=["amortized", "ffg", "flow", "nuts"],
                   choices=("amortized", "ffg", "flow", "mvn", "nuts"),
                   help="amortized: the run's encoder; ffg/flow/mvn: q* fitted per point; nuts: Pyro's NUTS reference")
    q.add_argument("--chains", type=int, default=4)
    q.add_argument("--draws", type=int, default=500)
    q.add_argument("--warmup", type=int, default=500, help="NUTS warm-up steps per chain")
    q.add_argument("--max-steps", type=int, default=3000, help="cap on q* optimization steps")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default="cpu")
    q.add_argument("--out", default=None, help="directory (default RUN/posterior)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_posterior)

    p = sub.add_parser("plot", help="save figures of a run (prior samples, reconstructions, latent space, curves)")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=2000, help="test points in the latent-space scatter")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="figure directory (default RUN/figures)")
    p.set_defaults(func=_plot)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ppl_vae.runs.checkpoint import CheckpointError
    from ppl_vae.training.trainer import TrainingDiverged

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, CheckpointError, TrainingDiverged) as e:
        print(f"ppl-vae {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
