"""Latent-space pictures of the lecture: VAEs with 2-, 5-, 10- and 20-dimensional latent spaces.

Trains one VAE per latent size on the embedded Fashion-MNIST subset, then saves: prior samples side by side
(Kingma & Welling 2014, Fig. 5), the decoded manifold of the 2-D model (their Fig. 4), and the 2-D model's test
latent means coloured by class.

    python examples/latent_spaces.py --out examples/out/latent --epochs 30
"""
import argparse
from pathlib import Path

from ppl_vae.figures.posterior import plot_manifold, plot_prior_samples_by_size
from ppl_vae.figures.samples import plot_latent_space
from ppl_vae.runs import train_run
from ppl_vae.runs.config import TrainConfig


def main(args):
    out = Path(args.out)
    models = {}
    for size in args.sizes:
        run_dir = out / f"z{size}"
        config = TrainConfig(z_dim=size, epochs=args.epochs, elbo="meanfield", seed=args.seed, valid_size=500)
        run = train_run(config, run_dir, resume=(run_dir / "checkpoint.pt").exists(), progress=False)
        print(f"latent size {size}: validation ELBO {run.history['valid_elbo'][-1]:.2f} nats after {args.epochs} epochs")
        models[size] = run.model
        if size == 2:
            test = run.splits().test
            print(f"saved {plot_manifold(run.model, out / 'manifold_2d.png', test.x)}")
            print(f"saved {plot_latent_space(run.guide, test.x, test.labels, out / 'latent_2d.png', model=run.model)}")
    print(f"saved {plot_prior_samples_by_size(models, out / 'prior_samples_by_size.png')}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/out/latent")
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10, 20])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
