"""Offline sample-quality metrics with a classifier trained on the dataset itself.

- :func:`classifier_inception_score`: the Inception score of Salimans et al. (2016),
  :math:`\\exp\\big(\\mathbb{E}_x\\, \\mathrm{KL}(p(y|x) \\,\\|\\, p(y))\\big)` with :math:`p(y) = \\mathbb{E}_x p(y|x)`
  over the set: high when every image is confidently one class *and* the classes are varied. In ``[1, C]``.
- :func:`frechet_distance`: the Fréchet distance of Heusel et al. (2017) between Gaussians fitted to two sets'
  features, :math:`\\|\\mu_a - \\mu_b\\|^2 + \\mathrm{tr}\\,\\Sigma_a + \\mathrm{tr}\\,\\Sigma_b - 2\\,\\mathrm{tr}
  (\\Sigma_a \\Sigma_b)^{1/2}`. Lower is closer; 0 for identical feature statistics.
- :func:`diversity`: the mean Euclidean distance between two distinct images of a set (in pixels, or in the
  classifier's features): 0 for copies of one image, a check against mode collapse that IS and FID can miss.

.. warning:: The classifier is a small MLP trained on the dataset (:mod:`ppl_vae.diagnostics.classifier`), not Inception-v3
    trained on ImageNet, so these numbers are **not comparable to published IS or FID values**, nor across
    classifiers: compare models with the *same* classifier (same weights), the same number of images, and images
    of the same kind as the classifier saw in training (binary samples for a classifier trained on binarized
    data: pixel probabilities are grey and shift its features). Both IS and FID are biased by the set size
    (FID upwards: two finite sets from one distribution score above 0).

The trace term uses symmetric eigendecompositions only, :math:`\\mathrm{tr}(\\Sigma_a\\Sigma_b)^{1/2} = \\sum_i
\\sqrt{\\lambda_i(\\Sigma_a^{1/2} \\Sigma_b \\Sigma_a^{1/2})}` (the two products are similar matrices), in float64
with ``torch.linalg.eigh``; no SciPy needed, and it runs on the classifier's device.

References:

1. T. Salimans, I. Goodfellow, W. Zaremba, V. Cheung, A. Radford, X. Chen (2016). Improved Techniques for
   Training GANs. NeurIPS.
2. M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter (2017). GANs Trained by a Two Time-Scale
   Update Rule Converge to a Local Nash Equilibrium. NeurIPS.
"""
from __future__ import annotations

import math

import torch

from ppl_vae.data.splits import check_images

__all__ = ["classifier_inception_score", "frechet_distance", "gaussian_frechet_distance", "feature_statistics",
           "diversity"]

CHUNK = 2048


@torch.no_grad()
def _apply(fn, classifier, images: torch.Tensor, name: str) -> torch.Tensor:
    """``fn`` on ``images`` in chunks, on the classifier's device and dtype; float64 ``(N, ...)`` on that device."""
    images = check_images(images, name=name)
    p = next(classifier.parameters())
    x_dim = getattr(classifier, "config", {}).get("x_dim")
    if x_dim is not None and images.shape[1] != x_dim:
        raise ValueError(f"Expected {name} with {x_dim} pixels per image (the classifier's input), got shape "
                         f"{tuple(images.shape)}")
    return torch.cat([fn(chunk.to(p.device, p.dtype)).double() for chunk in images.split(CHUNK)])


def classifier_inception_score(classifier, images: torch.Tensor) -> float:
    """The Inception score with ``classifier`` in place of Inception: ``exp(mean_x KL(p(y|x) || p(y)))``.

    :param classifier: a :class:`~ppl_vae.diagnostics.classifier.Classifier` (``classifier(x)`` gives logits ``(N, C)``).
    :param images: ``(N, D)`` in [0, 1].
    :returns: a float in ``[1, C]``: 1 when every image gets the same class distribution, ``C`` when each is
        classified with certainty and the classes are used equally often.
    """
    log_p = _apply(classifier, classifier, images, "images").log_softmax(-1)  # (N, C)
    log_marginal = torch.logsumexp(log_p, 0) - math.log(log_p.shape[0])  # (C,)
    kl = (log_p.exp() * (log_p - log_marginal)).sum(-1)  # (N,)
    return math.exp(kl.mean().item())


def feature_statistics(classifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` (float64) of the classifier's penultimate features of
    ``images (N, D)``, ``N >= 2``.

    :raises ValueError: for fewer than 2 images.
    """
    feats = _apply(classifier.features, classifier, images, "images")
    if feats.shape[0] < 2:
        raise ValueError(f"Expected at least 2 images to estimate a covariance, got {feats.shape[0]}")
    return feats.mean(0), torch.cov(feats.T).reshape(feats.shape[1], feats.shape[1])


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def gaussian_frechet_distance(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """The squared 2-Wasserstein (Fréchet) distance between ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)``:
    ``|mu_a - mu_b|^2 + tr cov_a + tr cov_b - 2 tr (cov_a cov_b)^{1/2}``, computed in float64.

    :param mu_a: ``(F,)``.
    :param cov_a: ``(F, F)`` symmetric positive semi-definite; likewise ``mu_b``, ``cov_b``.
    :returns: a float >= 0 (rounding below 0 is clipped to 0).
    :raises ValueError: if the shapes do not agree.
    """
    f = mu_a.shape[-1]
    for name, t, shape in (("mu_a", mu_a, (f,)), ("cov_a", cov_a, (f, f)), ("mu_b", mu_b, (f,)), ("cov_b", cov_b, (f, f))):
        if tuple(t.shape) != shape:
            raise ValueError(f"Expected {name} of shape {shape}, got {tuple(t.shape)}")
    mu_a, cov_a, mu_b, cov_b = (t.double() for t in (mu_a, cov_a, mu_b, cov_b))
    root_a = _sqrt_psd((cov_a + cov_a.T) / 2)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return max(value.item(), 0.0)


def frechet_distance(classifier, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """The Fréchet distance (the FID formula) between two sets of images ``(N_a, D)`` and ``(N_b, D)`` in [0, 1],
    on the classifier's penultimate features (:func:`feature_statistics`, :func:`gaussian_frechet_distance`)."""
    return gaussian_frechet_distance(*feature_statistics(classifier, images_a), *feature_statistics(classifier, images_b))


@torch.no_grad()
def diversity(images: torch.Tensor, classifier=None) -> float:
    """Mean Euclidean distance between two distinct members of a set, over all ``N (N - 1) / 2`` pairs.

    :param images: ``(N, D)`` in [0, 1], ``N >= 2``.
    :param classifier: if given, distances between its penultimate features; otherwise between pixel vectors
        (a perceptual-metric-free choice: for binary images the squared pixel distance counts differing pixels,
        e.g. ``sqrt(D / 2)`` on average between independent uniform-noise images).
    :returns: a float >= 0, 0 exactly when all images are equal. Costs ``O(N^2 D)``; computed in row chunks.
    :raises ValueError: for fewer than 2 images.
    """
    if classifier is None:
        x = check_images(images, name="images").double()
    else:
        x = _apply(classifier.features, classifier, images, "images")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"Expected at least 2 images to measure diversity, got {n}")
    total = x.new_zeros(())
    for start in range(0, n, 256):
        # direct differences, not the |a|^2 + |b|^2 - 2ab expansion, whose rounding makes equal images differ
        total += torch.cdist(x[start : start + 256], x, compute_mode="donot_use_mm_for_euclid_dist").sum()
    return (total / (n * (n - 1))).item()
