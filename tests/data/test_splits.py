import pytest
import torch

from ppl_vae.data import DataError, check_images, load_splits, make_loader


def test_splits_sizes_and_range():
    s = load_splits(binarize="none", valid_size=500)
    assert (len(s.train), len(s.valid), len(s.test)) == (4500, 500, 1000)
    assert s.train.probs.shape == (4500, 784) and 0 <= s.train.probs.min() and s.train.probs.max() <= 1


def test_threshold_binarization():
    s = load_splits(binarize="threshold", valid_size=0)
    raw = load_splits(binarize="none", valid_size=0)
    assert torch.equal(s.test.x, (raw.test.x >= 0.5).to(raw.test.x.dtype))


def test_static_is_fixed_and_dynamic_resamples():
    a, b = load_splits(binarize="static", seed=3), load_splits(binarize="static", seed=3)
    assert torch.equal(a.train.x, b.train.x) and set(a.train.x.unique().tolist()) == {0.0, 1.0}
    d = load_splits(binarize="dynamic")
    loader = make_loader(d.train, batch_size=len(d.train), shuffle=False)
    (x1, _, _), (x2, _, _) = next(iter(loader)), next(iter(loader))
    assert set(x1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(x1, x2)  # re-sampled on every draw
    assert (x1.mean() - d.train.probs.mean()).abs() < 0.01  # and unbiased
    assert torch.equal(d.test.x, d.test.x)  # evaluation data are fixed


def test_loader_returns_indices_and_is_seeded():
    s = load_splits(binarize="static")
    batches = list(make_loader(s.train, batch_size=64, seed=1))
    idx = torch.cat([b[2] for b in batches])
    assert torch.equal(idx.sort().values, torch.arange(len(s.train)))
    x, y, i = batches[0]
    assert torch.equal(x, s.train.probs[i]) and torch.equal(y, s.train.labels[i])
    again = next(iter(make_loader(s.train, batch_size=64, seed=1)))
    assert torch.equal(again[2], i)


def test_check_images_errors_are_data_errors():
    with pytest.raises(DataError, match="Expected x to be a torch.Tensor"):
        check_images([[0.0, 1.0]])
    with pytest.raises(ValueError, match="shape"):
        check_images(torch.zeros(3, 4, 5, 6))
    with pytest.raises(ValueError, match="784 pixels"):
        check_images(torch.zeros(3, 10), dim=784)
    bad = torch.zeros(3, 784)
    bad[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite pixels \(first bad rows: \[1\]\)"):
        check_images(bad)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        check_images(torch.full((2, 784), 255.0))
    assert check_images(torch.rand(2, 28, 28)).shape == (2, 784)


def test_bad_options():
    with pytest.raises(ValueError, match="Unknown binarization"):
        load_splits(binarize="random")
    with pytest.raises(ValueError, match=r"Expected valid_size as a count in \[0, 5000\)"):
        load_splits(valid_size=5000)
    with pytest.raises(ValueError, match=r"Expected valid_size as a count in \[0, 5000\).*got -1"):
        load_splits(valid_size=-1)
    for fraction in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"Expected valid_size as a fraction in \[0, 1\)"):
            load_splits(valid_size=fraction)
    with pytest.raises(ValueError, match="Expected valid_size to be a count"):
        load_splits(valid_size="0.1")
    with pytest.raises(ValueError, match="must leave training data"):
        load_splits(valid_size=0.99999)  # rounds to every training image
