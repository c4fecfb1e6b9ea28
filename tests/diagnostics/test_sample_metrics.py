"""Sample-quality metrics: closed forms and limiting cases, and the ordering real images > noise with a small
classifier trained on the embedded Fashion-MNIST subset."""
import math

import pytest
import torch
from torch import nn

from ppl_vae.data.splits import load_splits
from ppl_vae.diagnostics.classifier import train_classifier
from ppl_vae.diagnostics.sample_metrics import (
    classifier_inception_score,
    diversity,
    feature_statistics,
    frechet_distance,
    gaussian_frechet_distance,
)


@pytest.fixture(scope="module")
def data():
    """Static-binarized splits (float32), a classifier trained for 2 epochs (~75 % test accuracy) and binary
    uniform noise images."""
    splits = load_splits("fashion-mnist-small", binarize="static", valid_size=500)
    train, test = splits.train.x.float(), splits.test.x.float()
    classifier = train_classifier(train, splits.train.labels, epochs=2, seed=0)
    noise = torch.bernoulli(torch.full((1000, 784), 0.5), generator=torch.Generator().manual_seed(1))
    return classifier, train, test, noise


def _linear_classifier(weight):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def test_inception_score_closed_forms():
    # two images classified as [p, 1-p] and [1-p, p]: p(y) is uniform and IS = 2 exp(-H(p))
    s = 1.3
    p = torch.sigmoid(torch.tensor(s)).item()
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    classifier = _linear_classifier(torch.tensor([[s, 0.0], [0.0, s]]))
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert classifier_inception_score(classifier, images) == pytest.approx(2 * math.exp(-entropy), rel=1e-10)
    # limiting cases: the same prediction for every image -> 1; certain and evenly spread over C classes -> C
    assert classifier_inception_score(_linear_classifier(torch.zeros(4, 2)), images.repeat(3, 1)) == pytest.approx(1.0, abs=1e-12)
    certain = _linear_classifier(torch.eye(4) * 60.0)
    assert classifier_inception_score(certain, torch.eye(4).repeat(5, 1)) == pytest.approx(4.0, rel=1e-9)


def test_real_images_score_a_higher_inception_score_than_noise(data):
    classifier, _, test, noise = data
    real, fake = classifier_inception_score(classifier, test), classifier_inception_score(classifier, noise)
    assert 3.0 < real <= 10.0, real  # measured 4.7
    assert 1.0 <= fake < 1.5, fake  # measured 1.10: the classifier puts noise into one or two classes
    assert classifier_inception_score(classifier, torch.rand(1000, 784)) < 1.5


def test_gaussian_frechet_distance_closed_forms():
    torch.manual_seed(0)
    # commuting (diagonal) covariances: |mu_a - mu_b|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = torch.rand(6) + 0.1, torch.rand(6) + 0.1
    mu_a, mu_b = torch.randn(6), torch.randn(6)
    expected = (mu_a - mu_b).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()
    assert gaussian_frechet_distance(mu_a, a.diag(), mu_b, b.diag()) == pytest.approx(expected.item(), rel=1e-10)
    # non-commuting covariances: against SciPy's matrix square root of the product
    linalg = pytest.importorskip("scipy.linalg")
    m_a, m_b = torch.randn(6, 6), torch.randn(6, 6)
    cov_a, cov_b = m_a @ m_a.T + 0.1 * torch.eye(6), m_b @ m_b.T
    root = linalg.sqrtm((cov_a @ cov_b).numpy())
    expected = ((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace()).item() - 2 * root.trace().real
    assert gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-8)
    assert gaussian_frechet_distance(mu_a, cov_a, mu_a, cov_a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"Expected cov_b of shape \(6, 6\)"):
        gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b[:5, :5])


def test_frechet_distance_orders_real_images_and_noise(data):
    classifier, train, test, noise = data
    assert frechet_distance(classifier, train, train) == pytest.approx(0.0, abs=1e-6)
    real = frechet_distance(classifier, test, train)
    fake = frechet_distance(classifier, noise, train)
    assert 0.0 < real < 5.0, real  # measured 1.3: the test set differs from the training set by sampling only
    assert fake > 50 * real, (real, fake)  # measured 396
    mu, cov = feature_statistics(classifier, test)
    assert mu.shape == (128,) and cov.shape == (128, 128) and torch.allclose(cov, cov.T)


def test_diversity(data):
    classifier, _, test, noise = data
    same = test[:1].repeat(50, 1)
    assert diversity(same) == 0.0 and diversity(same, classifier=classifier) == 0.0
    real = diversity(test[:500])
    assert 0.0 < real < diversity(noise[:500]), real  # measured 16.0: shared backgrounds, unlike noise
    # independent uniform binary images differ in K ~ Binomial(784, 1/2) pixels, so the mean distance is E sqrt(K)
    # (19.7958); the standard error of the all-pairs mean over 500 images is ~0.001 (measured error 0.0007), and
    # averaging over N^2 ordered pairs with the zero diagonal instead of N (N - 1) would be 0.04 low
    expected = sum(math.comb(784, k) * 0.5**784 * math.sqrt(k) for k in range(785))
    assert diversity(noise[:500]) == pytest.approx(expected, abs=0.01)
    # in feature space, real images spread out and noise collapses (measured 23.6 vs 5.9)
    assert diversity(test[:500], classifier=classifier) > 2 * diversity(noise[:500], classifier=classifier)
    with pytest.raises(ValueError, match="Expected at least 2 images"):
        diversity(test[:1])
