"""A VQ-VAE on the embedded Fashion-MNIST subset, and its samples scored by offline metrics.

Trains a VQ-VAE (van den Oord et al. 2017; 8 code vectors of 16 dimensions per image, 64 codes) on the 4,500
static-binarized training images, prints the codebook perplexity (the effective number of codes in use) and the
test reconstruction NLL, then generates images from two priors over codes: the uniform prior the model was trained
with, and a categorical prior per latent position fitted to the training codes. A small classifier trained on the
same images scores test images, reconstructions, both kinds of samples and uniform noise with the classifier
inception score, the Fréchet distance to the training images and the mean pairwise pixel distance (not comparable
to published Inception-based IS/FID values). Saves reconstructions.png, samples_uniform_prior.png,
samples_fitted_prior.png and codebook_usage.png under --out.

    python examples/vqvae.py --out examples/out/vqvae --epochs 20
"""
import argparse
import json
import time
from pathlib import Path

import pyro
import torch

from ppl_vae.data.splits import load_splits, make_loader
from ppl_vae.diagnostics.classifier import accuracy, train_classifier
from ppl_vae.diagnostics.sample_metrics import classifier_inception_score, diversity, frechet_distance
from ppl_vae.figures import image_grid, new_figure, save_figure
from ppl_vae.models.vqvae import VQVAE
from ppl_vae.training.vqvae import train_vqvae


def show_grid(images, path, title, rows=8):
    cols = images.shape[0] // rows
    fig, ax = new_figure((0.75 * cols, 0.75 * rows + 0.4))
    ax.imshow(image_grid(images.cpu(), rows), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, path)


def main(args):
    start = time.perf_counter()
    out = Path(args.out)
    pyro.set_rng_seed(args.seed)
    splits = load_splits("fashion-mnist-small", binarize="static", valid_size=500)
    train, test = splits.train, splits.test

    # 1. Train: Adam on reconstruction NLL + codebook loss + 0.25 x commitment loss
    vq = VQVAE(num_latents=args.num_latents, code_dim=args.code_dim, num_codes=args.num_codes)
    history = train_vqvae(vq, make_loader(train, args.batch_size, seed=args.seed), epochs=args.epochs, lr=args.lr)
    for i in range(len(history["epoch"])):
        print(f"epoch {history['epoch'][i]:3d}: loss {history['loss'][i]:8.2f}  recon NLL {history['recon'][i]:7.2f} "
              f"nats  codebook perplexity {history['perplexity'][i]:5.1f} / {args.num_codes}")
    (out / "history.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(history, indent=1))

    # 2. Codes of the test images
    with torch.no_grad():
        terms = vq.loss(test.x)
    usage = vq.codebook_usage(test.x)
    print(f"test: recon NLL {terms.recon_nll:.2f} nats/image, codebook loss {terms.codebook_loss:.2f}; "
          f"codebook perplexity {usage.perplexity:.1f} of {args.num_codes} codes ({int((usage.counts > 0).sum())} used); "
          f"{args.num_latents} x log2({args.num_codes}) = {args.num_latents * torch.tensor(float(args.num_codes)).log2():.0f} "
          "bits per image at most")

    # 3. Samples from the uniform prior and from a prior fitted to the training codes
    prior = vq.fit_prior(train.x, pseudocount=0.0)
    torch.manual_seed(args.seed)
    samples = {"uniform prior": vq.sample(args.num_samples), "fitted prior": vq.sample(args.num_samples, prior=prior)}
    recon = torch.bernoulli(vq.reconstruct(test.x), generator=torch.Generator().manual_seed(args.seed))

    x16 = test.x[:16]
    paths = [show_grid(torch.cat([x16, vq.reconstruct(x16)]), out / "reconstructions.png",
                       "test images (top) and their reconstructions (bottom)", rows=2)]
    for name, prior_ in (("uniform", None), ("fitted", prior)):
        torch.manual_seed(args.seed)
        paths.append(show_grid(vq.sample(64, prior=prior_, probs=True), out / f"samples_{name}_prior.png",
                               f"codes from the {name} prior (pixel probabilities)"))
    fig, ax = new_figure((7, 3))
    ax.bar(range(args.num_codes), usage.counts.cpu())
    ax.set_xlabel("code")
    ax.set_ylabel("uses on the test set")
    ax.set_title(f"codebook usage, perplexity {usage.perplexity:.1f}")
    paths.append(save_figure(fig, out / "codebook_usage.png"))

    # 4. Offline sample metrics with a classifier trained on the same images
    classifier = train_classifier(train.x, train.labels, epochs=args.classifier_epochs, seed=args.seed)
    print(f"classifier: test accuracy {accuracy(classifier, test.x, test.labels):.3f} after {args.classifier_epochs} epochs")
    noise = torch.bernoulli(torch.full_like(test.x, 0.5), generator=torch.Generator().manual_seed(args.seed))
    sets = {"test images": test.x, "reconstructions": recon, **{f"samples, {k}": v for k, v in samples.items()},
            "uniform noise": noise}
    print(f"{'':24s} {'classifier IS':>13s} {'Frechet to train':>17s} {'pixel diversity':>16s}")
    for name, images in sets.items():
        print(f"{name:24s} {classifier_inception_score(classifier, images):13.2f} "
              f"{frechet_distance(classifier, images, train.x):17.2f} {diversity(images[:500]):16.2f}")
    for path in paths:
        print(f"saved {path}")
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/out/vqvae")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--num-latents", type=int, default=8)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--num-codes", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--classifier-epochs", type=int, default=5)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
