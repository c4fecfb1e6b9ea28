"""The Bernoulli models refuse data their likelihood cannot score, on every path that calls them (estimators,
training, AIS), not only on the command line: images scaled to 0-255 used to get an IWAE of thousands of nats
*above* zero (a Bernoulli log-likelihood is never positive)."""
import pyro
import pytest
import torch

from ppl_vae.data import DataError
from ppl_vae.estimators import ais, elbo, iwae_bound, prior_mc
from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import VAEGAN, VQVAE, AdversarialAutoencoder, Autoencoder, BernoulliVAE, DeltaEncoder
from ppl_vae.nn import mlp
from ppl_vae.training import Trainer

X_DIM = 12


def _images(n=6):
    return torch.rand(n, X_DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64).bernoulli()


def _pair(name):
    if name == "vae":
        model = BernoulliVAE(X_DIM, 3, (8,))
        return model, AmortizedNormal.for_model(model, _images(2), hidden=(8,))
    if name == "ae":
        return Autoencoder(X_DIM, 3, (8,)), DeltaEncoder(X_DIM, 3, (8,))
    if name == "aae":
        aae = AdversarialAutoencoder(X_DIM, 3, (8,), dis_hidden=(8,))
        return aae.model, aae.guide
    if name == "vaegan":
        model = VAEGAN(X_DIM, 3, (8,), dis_hidden=(8,))
        return model, AmortizedNormal(X_DIM, {"z": 3}, hidden=(8,))
    raise AssertionError(name)


BAD = {
    "times 255": (lambda x: x * 255, r"pixels outside \[0, 1\] \(min 0, max 255\)"),
    "negative": (lambda x: x - 0.5, r"pixels outside \[0, 1\]"),
    "NaN": (lambda x: torch.where(torch.arange(X_DIM) == 3, torch.nan, x), r"NaN or infinite (pixels|values) \(first bad rows"),
    "image-shaped": (lambda x: x.reshape(-1, 3, 4), rf"Expected x of shape \(N, {X_DIM}\).*got \(\d+, 3, 4\)"),
}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("name", ["vae", "ae", "aae", "vaegan"])
def test_estimators_and_training_refuse_bad_images(name, bad):
    model, guide = _pair(name)
    transform, message = BAD[bad]
    x = transform(_images())
    with pytest.raises(DataError, match=message):
        elbo(model, guide, x)
    with pytest.raises(DataError, match=message):
        Trainer(model, guide, pyro.infer.Trace_ELBO(), lr=1e-3).step(x)
    if name == "vae":
        with pytest.raises(DataError, match=message):
            iwae_bound(model, guide, x, num_samples=10)
        with pytest.raises(DataError, match=message):
            ais(model, x, num_chains=2, num_steps=3)
        with pytest.raises(DataError, match=message):
            prior_mc(model, x, num_samples=10)


def test_the_positive_iwae_of_images_times_255_is_refused():
    """The defect as reported: before, this returned a large positive 'log-likelihood'."""
    model, guide = _pair("vae")
    with pytest.raises(DataError, match="Bernoulli likelihood cannot score"):
        iwae_bound(model, guide, _images() * 255, num_samples=20)


def test_vqvae_model_refuses_bad_images():
    vq = VQVAE(X_DIM, num_latents=2, code_dim=2, num_codes=4, hidden=(8,))
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        pyro.poutine.trace(vq.model).get_trace(_images() * 255)


def test_value_checks_follow_pyros_validation_flag():
    """Costly checks only under pyro's validation (on by default), as Pyro does; the shape check always."""
    model, guide = _pair("vae")
    pyro.enable_validation(False)
    try:
        assert torch.isfinite(elbo(model, guide, _images() * 255).per_point).all()  # scored: validation is off
        with pytest.raises(DataError, match=rf"Expected x of shape \(N, {X_DIM}\)"):
            elbo(model, guide, _images()[:, :5])
    finally:
        pyro.enable_validation(True)


def test_good_images_pass():
    model, guide = _pair("vae")
    assert elbo(model, guide, _images()).mean < 0
    assert elbo(model, guide, torch.rand(6, X_DIM, dtype=torch.float64)).per_point.shape == (6,)  # intensities


@pytest.mark.parametrize("hidden", [(-5,), (0,), (8, 2.5)])
def test_layer_sizes_must_be_positive_integers(hidden):
    with pytest.raises(ValueError, match="Expected layer sizes that are positive integers"):
        mlp(4, hidden, 3)
    with pytest.raises(ValueError, match="Expected layer sizes that are positive integers"):
        BernoulliVAE(X_DIM, 3, hidden)
    with pytest.raises(ValueError, match="Expected layer sizes that are positive integers"):
        BernoulliVAE(X_DIM, 0, (8,))
