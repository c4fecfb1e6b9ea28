"""Three ways to train a decoder: a VAE, a VAE-GAN (Larsen et al. 2016) and an adversarial autoencoder
(Makhzani et al. 2015), side by side on the embedded Fashion-MNIST subset.

All three decode ``z ~ N(0, I)`` with the same MLP architecture. The VAE maximizes Pyro's ``Trace_ELBO`` with a
Bernoulli likelihood; the VAE-GAN observes a discriminator's features of the data under a Gaussian centred at
those of the reconstruction, and adds a GAN loss; the AAE replaces the VAE's KL term by a discriminator in latent
space. Each trains for the same number of epochs; the script writes a table (``comparison.md``) of: the test
log-likelihood where it is defined (the VAE's IWAE-1000 bound; the VAE-GAN's likelihood lives in discriminator
feature space and the AAE has no density), the test pixel reconstruction cross-entropy (the Bernoulli log-loss of
a test image under its reconstruction from the encoder's mean code, nats per image), and sample-quality metrics of
1,000 prior samples computed offline with a classifier trained on the same training images
(:mod:`ppl_vae.diagnostics.sample_metrics`: classifier-based Inception score, Fréchet distance to the test images in the
classifier's feature space, pixel diversity — not comparable to published Inception numbers); it saves the
decoded images of the same 64 prior draws through each decoder (``prior_samples.png``) and the training
histories (``history.json``).

    python examples/vaegan_aae.py --out examples/out/adversarial --epochs 10 [--dataset fashion-mnist]
"""
import argparse
import json
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch.nn.functional import binary_cross_entropy_with_logits

from ppl_vae.data.splits import load_splits, make_loader
from ppl_vae.diagnostics.classifier import train_classifier
from ppl_vae.diagnostics.sample_metrics import classifier_inception_score, diversity, frechet_distance
from ppl_vae.estimators import iwae_bound
from ppl_vae.figures import image_grid, new_figure, save_figure
from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import VAEGAN, AdversarialAutoencoder, BernoulliVAE
from ppl_vae.training import train_aae, train_vaegan
from ppl_vae.training.trainer import Trainer


def train_vae(x_loader, args):
    model = BernoulliVAE(z_dim=args.z_dim, hidden=args.hidden)
    guide = AmortizedNormal(784, {"z": args.z_dim}, hidden=args.hidden)
    trainer = Trainer(model, guide, Trace_ELBO(), lr=args.lr)
    history = {"epoch": [], "elbo": []}
    for epoch in range(1, args.epochs + 1):
        history["epoch"].append(epoch)
        history["elbo"].append(trainer.train_epoch(x_loader)["train_elbo"])
    return model, guide, history


@torch.no_grad()
def reconstruction_error(decoder, codes: torch.Tensor, x: torch.Tensor) -> float:
    """Mean Bernoulli cross-entropy of ``x (N, 784)`` under ``decoder(codes)``, nats per image."""
    return binary_cross_entropy_with_logits(decoder(codes), x, reduction="none").sum(-1).mean().item()


def main(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(args.dataset, binarize="static", valid_size=args.valid_size)
    x_test = splits.test.x
    results, histories = {}, {}

    pyro.set_rng_seed(args.seed)
    start = time.perf_counter()
    vae, vae_guide, histories["VAE"] = train_vae(make_loader(splits.train, args.batch_size, seed=args.seed), args)
    codes = vae_guide.distributions(x_test)["z"].mean.detach()
    results["VAE"] = (vae, reconstruction_error(vae.decoder, codes, x_test), time.perf_counter() - start)

    pyro.set_rng_seed(args.seed)
    start = time.perf_counter()
    vaegan = VAEGAN(z_dim=args.z_dim, hidden=args.hidden, dis_hidden=args.hidden)
    vaegan_guide = AmortizedNormal(784, {"z": args.z_dim}, hidden=args.hidden)
    loader = make_loader(splits.train, args.batch_size, seed=args.seed)
    histories["VAE-GAN"] = train_vaegan(vaegan, vaegan_guide, loader, args.epochs, args.lr, gamma=args.gamma)
    codes = vaegan_guide.distributions(x_test)["z"].mean.detach()
    results["VAE-GAN"] = (vaegan, reconstruction_error(vaegan.decoder, codes, x_test), time.perf_counter() - start)

    pyro.set_rng_seed(args.seed)
    start = time.perf_counter()
    aae = AdversarialAutoencoder(z_dim=args.z_dim, hidden=args.hidden, dis_hidden=args.hidden)
    histories["AAE"] = train_aae(aae, make_loader(splits.train, args.batch_size, seed=args.seed), args.epochs, args.lr)
    results["AAE"] = (aae, reconstruction_error(aae.decoder, aae.encode(x_test), x_test), time.perf_counter() - start)

    torch.manual_seed(args.seed)
    vae_ll = iwae_bound(vae, vae_guide, x_test[: args.num_eval], num_samples=1000)
    classifier = train_classifier(splits.train.x, splits.train.labels, epochs=args.classifier_epochs, seed=args.seed)
    real = splits.valid.x[: args.num_samples]  # held-out images that are not the test images: the reference row
    rows = [("validation images", "", "", classifier_inception_score(classifier, real),
             frechet_distance(classifier, real, x_test), diversity(real), "")]
    for name, (model, recon, seconds) in results.items():
        torch.manual_seed(args.seed)
        samples = model.sample(args.num_samples)
        ll = f"{vae_ll.mean:.1f} ± {vae_ll.stderr:.1f}" if name == "VAE" else "—"
        rows.append((name, ll, f"{recon:.1f}", classifier_inception_score(classifier, samples),
                     frechet_distance(classifier, samples, x_test), diversity(samples), f"{seconds:.0f}"))
    header = (f"{args.dataset}, {len(splits.train)} training images (static binarization), {args.epochs} epochs "
              f"each, z_dim {args.z_dim}, MLPs {args.hidden}; {args.num_samples} prior samples per model\n\n")
    lines = ["| | test log p(x) (IWAE-1000) | test reconstruction | classifier IS | Fréchet to test | pixel diversity | train s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]} |" for r in rows]
    table = "\n".join(lines)
    (out / "comparison.md").write_text(header + table + "\n")
    print(header + table)
    print(f"VAE train ELBO {histories['VAE']['elbo'][-1]:.1f} nats; "
          f"VAE-GAN discriminator accuracy {histories['VAE-GAN']['disc_accuracy'][-1]:.2f}; "
          f"AAE latent discriminator accuracy {histories['AAE']['disc_accuracy'][-1]:.2f} (0.5: codes match the prior)")

    torch.manual_seed(args.seed)
    z = torch.randn(64, args.z_dim)
    fig, axes = new_figure((15, 5.4), 1, 3)
    for ax, (name, (model, _, _)) in zip(axes, results.items()):
        ax.imshow(image_grid(model.decode(z), 8), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"The same 64 draws z ~ N(0, I) through each decoder (pixel probabilities), {args.epochs} epochs")
    print(f"saved {save_figure(fig, out / 'prior_samples.png')}")
    (out / "history.json").write_text(json.dumps(histories, indent=2) + "\n")
    print(f"saved {out / 'history.json'}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/out/adversarial")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--z-dim", type=int, default=16)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gamma", type=float, default=1.0, help="VAE-GAN: weight of the feature likelihood for the decoder")
    p.add_argument("--dataset", default="fashion-mnist-small", help="fashion-mnist-small (embedded) or fashion-mnist")
    p.add_argument("--valid-size", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=1000, help="prior samples per model for the metrics")
    p.add_argument("--num-eval", type=int, default=500, help="test points for the VAE's IWAE bound")
    p.add_argument("--classifier-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
