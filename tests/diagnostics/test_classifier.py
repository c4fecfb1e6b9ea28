"""The feature classifier of the sample metrics: it learns the classes, is reproducible and reloads."""
import pytest
import torch

from ppl_vae.data.splits import load_splits
from ppl_vae.diagnostics.classifier import Classifier, accuracy, train_classifier


def test_classifier_learns_is_reproducible_and_reloads(float32):
    splits = load_splits("fashion-mnist-small", binarize="static", valid_size=500)
    classifier = train_classifier(splits.train.x, splits.train.labels, epochs=2, seed=3)
    assert accuracy(classifier, splits.test.x, splits.test.labels) > 0.65  # measured 0.74 (chance 0.10)
    again = train_classifier(splits.train.x, splits.train.labels, epochs=2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(classifier.state_dict().values(), again.state_dict().values()))
    reloaded = Classifier(**classifier.config)
    reloaded.load_state_dict(classifier.state_dict())
    x = splits.test.x[:10]
    assert torch.equal(reloaded(x), classifier(x)) and reloaded.features(x).shape == (10, 128)


def test_classifier_errors():
    with pytest.raises(ValueError, match=r"Expected labels of shape \(4,\)"):
        train_classifier(torch.zeros(4, 784), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="Expected at least one hidden layer"):
        Classifier(hidden=())
