"""The VAE-GAN: its Pyro model has the paper's feature-wise likelihood, each player updates only its own
parameters, and training on the embedded data lowers the pixel reconstruction error."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample

from ppl_vae.data.splits import load_splits, make_loader
from ppl_vae.guides import AmortizedNormal
from ppl_vae.models.vaegan import VAEGAN
from ppl_vae.training.vaegan import (
    VAEGANOptimizers,
    decoder_step,
    discriminator_step,
    encoder_step,
    train_vaegan,
    vaegan_step,
)

Z_DIM = 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one thread is as fast as two, and immune to the 10-50x slowdown of OpenMP threads
    competing with other processes for the cores (measured on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_pair():
    vaegan = VAEGAN(z_dim=Z_DIM, hidden=(64,), dis_hidden=(64, 32), feature_layer=0)
    return vaegan, AmortizedNormal(784, {"z": Z_DIM}, hidden=(64,))


def delta_guide(z0):
    def guide(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(z0).to_event(1))
    return guide


@pytest.fixture(scope="module")
def train_set():
    return load_splits("fashion-mnist-small", binarize="static", valid_size=500).train


def test_trace_has_latent_z_and_observed_features_in_data_plate():
    vaegan, _ = small_pair()
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    trace = poutine.trace(vaegan.model).get_trace(x)
    z, features = trace.nodes["z"], trace.nodes["features"]
    assert not z["is_observed"] and features["is_observed"]
    for site in (z, features):
        assert [f.name for f in site["cond_indep_stack"]] == ["data"]
        assert site["fn"].event_dim == 1
    assert z["value"].shape == (5, Z_DIM) and features["value"].shape == (5, 64)
    assert torch.equal(features["value"], vaegan.discriminator.features(x))
    sample_sites = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    assert sample_sites == ["z", "features"]


def test_elbo_is_prior_plus_feature_gaussian_at_a_delta_guide():
    """With q = delta(z0), Pyro's Trace_ELBO is log N(z0; 0, I) + log N(Dis_l(x); Dis_l(x_tilde(z0)), I): the
    model's density is the paper's, normalized (constant -F/2 log 2 pi included)."""
    vaegan, _ = small_pair()
    x = torch.bernoulli(torch.full((3, 784), 0.4))
    z0 = torch.randn(3, Z_DIM)
    elbo = -Trace_ELBO().differentiable_loss(vaegan.model, delta_guide(z0), x)
    f_x = vaegan.discriminator.features(x)
    f_tilde = vaegan.discriminator.features(torch.sigmoid(vaegan.decoder(z0)))
    expected = (-0.5 * (z0**2).sum() - 0.5 * 3 * Z_DIM * math.log(2 * math.pi)
                - 0.5 * ((f_x - f_tilde) ** 2).sum() - 0.5 * f_x.numel() * math.log(2 * math.pi))
    assert elbo.item() == pytest.approx(expected.item(), rel=1e-12)


def test_decoder_gradient_of_feature_nll_equals_that_of_the_elbo():
    """decoder_step trains the decoder on the feature NLL; at the same z it has the same decoder gradient as -ELBO."""
    vaegan, _ = small_pair()
    x = torch.bernoulli(torch.full((6, 784), 0.4))
    z0 = torch.randn(6, Z_DIM)
    params = list(vaegan.decoder.parameters())
    g_elbo = torch.autograd.grad(Trace_ELBO().differentiable_loss(vaegan.model, delta_guide(z0), x), params)
    g_nll = torch.autograd.grad(vaegan.feature_nll(x, torch.sigmoid(vaegan.decoder(z0))).sum(), params)
    for a, b in zip(g_elbo, g_nll):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gamma, moves", [(0.0, False), (1.0, True)])
def test_decoder_step_weights_the_feature_likelihood_by_gamma(gamma, moves):
    """With the discriminator's output layer zeroed, D is constant and the generator loss has no gradient: the
    decoder then moves only through gamma * feature NLL (Adam's update of a zero gradient is exactly zero)."""
    vaegan, guide = small_pair()
    with torch.no_grad():
        vaegan.discriminator.head.weight.zero_()
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    before = _snapshot(vaegan.decoder)
    decoder_step(vaegan, guide, x, VAEGANOptimizers.create(vaegan, guide, lr=1e-2).decoder, gamma=gamma)
    assert any(_changed(vaegan.decoder, before)) == moves


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(module, before):
    return [not torch.equal(p, b) for p, b in zip(module.parameters(), before)]


@pytest.mark.parametrize("player", ["encoder", "decoder", "discriminator"])
def test_each_step_updates_only_its_player(player):
    vaegan, guide = small_pair()
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    modules = {"encoder": guide, "decoder": vaegan.decoder, "discriminator": vaegan.discriminator}
    opts = VAEGANOptimizers.create(vaegan, guide, lr=1e-2)
    before = {k: _snapshot(m) for k, m in modules.items()}
    if player == "encoder":
        encoder_step(vaegan, guide, x, opts.encoder)
    elif player == "decoder":
        decoder_step(vaegan, guide, x, opts.decoder, gamma=1.0)
    else:
        discriminator_step(vaegan, guide, x, opts.discriminator)
    for name, module in modules.items():
        changed = _changed(module, before[name])
        if name == player:
            assert all(changed), f"the {player} step left some {name} parameters unchanged"
            assert all(p.grad is not None for p in module.parameters())
        else:
            assert not any(changed), f"the {player} step changed {name} parameters"
            # no gradient leaked into another player's .grad (it would pollute that player's next step)
            assert all(p.grad is None for p in module.parameters()), f"the {player} step wrote {name} gradients"


def test_training_lowers_the_pixel_reconstruction_error(train_set, float32):
    """Two passes over 1,000 images in batches of 50 (40 steps): the mean pixel cross-entropy of the last 5 batches
    is at least 60 nats below that of the first 5. At initialization the decoder outputs ~0.5 per pixel
    (784 log 2 = 543 nats); the last 5 batches measured 426-433 nats over seeds 0-3 and a mean of 5 batches varies
    by ~10 nats, so the margin leaves room for noise while a decoder that does not learn (≈ 543) fails."""
    pyro.set_rng_seed(0)
    vaegan, guide = small_pair()
    opts = VAEGANOptimizers.create(vaegan, guide, lr=2e-3)
    subset = type(train_set)(train_set.probs[:1000].float(), train_set.labels[:1000])
    recon = []
    for epoch in range(2):
        for x, _, idx in make_loader(subset, 50, seed=epoch):
            recon.append(vaegan_step(vaegan, guide, x, opts, gamma=1.0, idx=idx)["reconstruction"])
    first, last = sum(recon[:5]) / 5, sum(recon[-5:]) / 5
    assert first == pytest.approx(784 * math.log(2), abs=15)
    assert last < first - 60, (first, last)


def test_train_vaegan_history_and_errors(train_set, float32):
    vaegan, guide = small_pair()
    subset = type(train_set)(train_set.probs[:200].float(), train_set.labels[:200])
    history = train_vaegan(vaegan, guide, make_loader(subset, 100), epochs=2, lr=1e-3)
    assert history["epoch"] == [1, 2]
    for key in ("elbo", "feature_nll", "reconstruction", "gen_loss", "disc_loss", "disc_accuracy"):
        assert len(history[key]) == 2 and all(math.isfinite(v) for v in history[key])
    assert all(0 <= a <= 1 for a in history["disc_accuracy"])
    with pytest.raises(ValueError, match="Expected gamma >= 0"):
        train_vaegan(vaegan, guide, make_loader(subset, 100), epochs=1, gamma=-1.0)
    with pytest.raises(ValueError, match="Expected epochs >= 1"):
        train_vaegan(vaegan, guide, make_loader(subset, 100), epochs=0)
    with pytest.raises(ValueError, match=r"Expected x of shape \(N, 784\)"):
        vaegan.model(torch.zeros(3, 10))
    with pytest.raises(ValueError, match="Expected feature_layer in"):
        VAEGAN(dis_hidden=(32,), feature_layer=1)
    assert vaegan.sample(7).shape == (7, 784) and set(vaegan.sample(7).unique().tolist()) <= {0.0, 1.0}
