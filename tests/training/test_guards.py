"""No trainer commits a bad step: a finite loss with a NaN gradient, a gradient whose square overflows Adam's second
moment, or an update that overflows the parameters stops training with TrainingDiverged naming the step and the
parameter, and (for the gradients) leaves every parameter as it was."""
import copy
import functools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import VAEGAN, VQVAE, AdversarialAutoencoder
from ppl_vae.objectives import AnnealedELBO, linear_warmup
from ppl_vae.runs.zoo import MethodGuide
from ppl_vae.training import AdversarialTrainer, Trainer, TrainingDiverged, VQVAETrainer


class Pair(nn.Module):
    """``z ~ N(0, 1)``, ``x ~ N(z + sqrt(|w|), noise)``: at ``w = 0`` the loss is finite and d/dw is NaN (0/0)."""

    def __init__(self, w=0.0, noise=1.0):
        super().__init__()
        self.noise = noise
        self.w = nn.Parameter(torch.tensor(w))
        self.loc = nn.Parameter(torch.tensor(0.5))

    def model(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z + self.w.abs().sqrt(), self.noise), obs=x)

    def guide(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc.expand(x.shape[0]), 1.0))


def _snapshot(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_a_finite_loss_with_a_nan_gradient_is_not_applied():
    pair = Pair(w=1.0)
    trainer = Trainer(pair.model, pair.guide, Trace_ELBO(), lr=0.1, modules=[pair])
    x = torch.randn(5)
    trainer.step(x)
    with torch.no_grad():
        pair.w.zero_()
    before = _snapshot(pair)
    optimizer_state = copy.deepcopy(trainer.optimizer.state_dict())
    with pytest.raises(TrainingDiverged, match=r"gradient of the loss became non-finite .* at step 2 in modules\[0\]\.w;"
                                               r" the update was not applied"):
        trainer.step(x)
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(pair)))
    assert trainer.steps == 1
    after = trainer.optimizer.state_dict()["state"]
    assert all(torch.equal(after[i]["exp_avg"], s["exp_avg"]) for i, s in optimizer_state["state"].items())


def test_a_gradient_too_large_for_adam_is_not_applied():
    """|g| > sqrt(float max): g² overflows Adam's second moment to inf (the parameter would freeze silently)."""
    pair = Pair(w=1.0, noise=1e-10)
    trainer = Trainer(pair.model, pair.guide, Trace_ELBO(), lr=0.1, modules=[pair])
    before = _snapshot(pair)
    with pytest.raises(TrainingDiverged, match=r"too large for Adam's second moment\) at step 1 in modules\[0\]\.w"):
        trainer.step(torch.tensor([1e143]))  # loss ~5e305 (finite), gradient ~1e163 > sqrt(1.8e308)
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(pair)))


def test_an_update_that_overflows_the_parameters_is_reported():
    pair = Pair(w=1.0)
    trainer = Trainer(pair.model, pair.guide, Trace_ELBO(), lr=1e308, modules=[pair])
    with pytest.raises(TrainingDiverged, match=r"The update at step 1 made .* non-finite \(the learning rate is too large\)"):
        trainer.step(torch.randn(5))


@pytest.mark.parametrize("kind", ["vaegan", "aae"])
def test_adversarial_players_never_apply_a_nan_gradient(kind):
    x = torch.bernoulli(torch.full((6, 12), 0.4))
    torch.manual_seed(0)
    if kind == "vaegan":
        model = VAEGAN(x_dim=12, z_dim=2, hidden=(8,), dis_hidden=(8,))
        guide = AmortizedNormal(12, {"z": 2}, hidden=(8,))
    else:
        model = AdversarialAutoencoder(x_dim=12, z_dim=2, hidden=(8,), dis_hidden=(8,))
        guide = MethodGuide(model)
    trainer = AdversarialTrainer(kind, model, guide, lr=1e-3)
    trainer.step(x)
    encoder = _snapshot(guide)
    with torch.no_grad():
        next(model.discriminator.parameters())[0, 0] = float("nan")  # the discriminator's outputs become NaN
    before = _snapshot(model.discriminator)
    with pytest.raises(TrainingDiverged, match=r"became nan .*\(step 2 of the"):
        trainer.step(x)
    # the player whose loss is NaN is not updated (the AAE's autoencoding phase, which does not involve the
    # discriminator, came first and was; the VAE-GAN's encoder already sees the NaN features and stops the step)
    for a, b in zip(before, _snapshot(model.discriminator)):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    if kind == "vaegan":
        assert all(torch.equal(a, b) for a, b in zip(encoder, _snapshot(guide)))


def test_vqvae_trainer_never_applies_a_nan_gradient():
    torch.manual_seed(0)
    model = VQVAE(x_dim=12, num_latents=2, code_dim=3, num_codes=4, hidden=(8,))
    trainer = VQVAETrainer(model)
    x = torch.bernoulli(torch.full((6, 12), 0.4))
    trainer.step(x)
    with torch.no_grad():
        model.decoder[0].weight[0, 0] = float("nan")
    before = _snapshot(model)
    with pytest.raises(TrainingDiverged, match="at step 2"):
        trainer.step(x)
    assert all(torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)) for a, b in zip(before, _snapshot(model)))


def test_trainer_logs_the_true_elbo_of_the_same_draws():
    pair = Pair(w=1.0)
    x = torch.randn(5)
    objective = AnnealedELBO(Trace_ELBO(), 4.0)
    trainer = Trainer(pair.model, pair.guide, objective, lr=0.1, modules=[pair])
    pyro.set_rng_seed(3)
    trained = trainer.step(x)
    before = copy.deepcopy(pair)
    pyro.set_rng_seed(3)
    objective_value = AnnealedELBO(Trace_ELBO(), 4.0).differentiable_loss(before.model, before.guide, x).item()
    assert trained != trainer.last_elbo
    assert objective_value / 5 != pytest.approx(-trainer.last_elbo)  # beta = 4 is not the ELBO

    class Surrogate:  # an objective that is not an ELBO (and does not say what its ELBO is)
        def differentiable_loss(self, model, guide, *args):
            return 2 * Trace_ELBO().differentiable_loss(model, guide, *args)

    other = Trainer(pair.model, pair.guide, Surrogate(), lr=0.1, modules=[pair])
    other.step(x)
    assert other.last_elbo is None  # not reported as an ELBO


def test_elbo_of_the_step_equals_trace_elbo_with_the_same_draws():
    torch.manual_seed(0)
    pair = Pair(w=1.0)
    x = torch.randn(5)
    reference = copy.deepcopy(pair)
    pyro.set_rng_seed(3)
    expected = -Trace_ELBO().loss(reference.model, reference.guide, x) / 5
    trainer = Trainer(pair.model, pair.guide, AnnealedELBO(Trace_ELBO(), 4.0), lr=0.1, modules=[pair])
    pyro.set_rng_seed(3)
    trainer.step(x)
    assert trainer.last_elbo == pytest.approx(expected, rel=1e-12)


def test_parameter_discovery_draws_no_random_numbers():
    pair = Pair(w=1.0)
    trainer = Trainer(pair.model, pair.guide, Trace_ELBO(num_particles=3, vectorize_particles=True), lr=0.1,
                      modules=[pair])
    x = torch.randn(5)
    state = torch.get_rng_state()
    trainer.parameters(x, None)
    assert torch.equal(state, torch.get_rng_state())


def test_trainer_state_round_trips_pyro_params_and_the_schedule():
    """Three steps, save, a fresh trainer loads and takes two more: the same as five straight steps, bitwise."""

    def model(x, idx=None):
        scale = pyro.param("scale", torch.tensor(1.5), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z, scale), obs=x)

    def guide(x, idx=None):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc.expand(x.shape[0]), 1.0))

    def make():
        return Trainer(model, guide, AnnealedELBO(Trace_ELBO(), functools.partial(linear_warmup, warmup_steps=4)), lr=0.1)

    batches = [torch.randn(4) for _ in range(5)]
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    straight = make()
    for x in batches:
        straight.step(x)
    expected = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    first = make()
    for x in batches[:3]:
        first.step(x)
    state, rng = copy.deepcopy(first.state_dict()), torch.get_rng_state()
    pyro.clear_param_store()
    second = make()
    second.load_state_dict(state, batches[0], None)
    torch.set_rng_state(rng)
    for x in batches[3:]:
        second.step(x)
    assert second.objective.step == 5 and second.steps == 5
    for name, value in pyro.get_param_store().named_parameters():
        assert torch.equal(value, expected[name]), name
