"""KL annealing: the schedules' values, and LatentScale scaling exactly the latent terms of Pyro's ELBOs."""
from functools import partial

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import BernoulliVAE
from ppl_vae.objectives.annealing import AnnealedELBO, LatentScale, constant, cyclical, linear_warmup, scale_latents
from ppl_vae.training.trainer import Trainer


@pytest.mark.parametrize("step, expected", [(0, 0.0), (1, 0.1), (5, 0.5), (10, 1.0), (11, 1.0), (1000, 1.0)])
def test_linear_warmup(step, expected):
    assert linear_warmup(step, warmup_steps=10) == pytest.approx(expected, abs=1e-12)
    assert linear_warmup(step, warmup_steps=10, beta_max=0.5) == pytest.approx(0.5 * expected, abs=1e-12)


def test_linear_warmup_without_warmup_is_beta_max():
    assert linear_warmup(0, warmup_steps=0, beta_max=2.0) == 2.0


# cycles of 10 steps, ramp over the first 40 %: 0, .25, .5, .75, 1, 1, ..., 1, then 0 again at step 10
@pytest.mark.parametrize("step, expected", [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (7, 1.0), (9, 1.0),
                                            (10, 0.0), (12, 0.5), (25, 1.0), (31, 0.25)])
def test_cyclical(step, expected):
    assert cyclical(step, cycle_steps=10, ratio=0.4) == pytest.approx(expected, abs=1e-12)
    assert cyclical(step, cycle_steps=10, ratio=0.4, beta_max=3.0) == pytest.approx(3 * expected, abs=1e-12)


def test_constant():
    assert [constant(t, beta=4.0) for t in (0, 1, 10**6)] == [4.0, 4.0, 4.0]


@pytest.mark.parametrize("call, match", [
    (lambda: linear_warmup(-1, 10), "step >= 0"),
    (lambda: linear_warmup(0, -3), "warmup_steps >= 0"),
    (lambda: cyclical(0, 0), "cycle_steps >= 1"),
    (lambda: cyclical(0, 10, ratio=0.0), r"ratio in \(0, 1\]"),
    (lambda: constant(0, beta=-1.0), "beta to be finite and >= 0"),
    (lambda: LatentScale(-0.1), "beta to be finite and >= 0"),
    (lambda: LatentScale(float("nan")), "beta to be finite and >= 0"),
    (lambda: AnnealedELBO(Trace_ELBO(), -2.0), "schedule to be finite and >= 0"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _pair(z_dim=3):
    model = BernoulliVAE(x_dim=12, z_dim=z_dim, hidden=(8,))
    guide = AmortizedNormal(12, {"z": z_dim}, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 12), 0.3))
    return model, guide, x


def _recording(guide, record):
    def recorded(x, idx=None):
        record.update(guide(x, idx))
    return recorded


def _hand_terms(model, guide, x, z):
    """``(log p(x|z), log p(z), log q(z|x), KL(q||p))`` summed over the batch, computed without Pyro's ELBOs."""
    log_lik = dist.Bernoulli(logits=model.decoder(z)).log_prob(x).sum()
    log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum()
    q = guide.distributions(x)["z"].base_dist
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum()
    return log_lik, log_prior, q.log_prob(z).sum(), kl


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 2.5])
def test_latent_scale_trace_elbo_scales_only_the_latent_terms(beta):
    model, guide, x = _pair()
    z = {}
    loss = Trace_ELBO().differentiable_loss(scale_latents(beta, model), scale_latents(beta, _recording(guide, z)), x)
    log_lik, log_prior, log_q, _ = _hand_terms(model, guide, x, z["z"])
    expected = -(log_lik + beta * (log_prior - log_q))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    if beta == 0.0:  # the likelihood term alone, computed by hand
        assert loss.item() == pytest.approx(-log_lik.item(), rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 2.5])
def test_latent_scale_trace_mean_field_scales_the_analytic_kl(beta):
    model, guide, x = _pair()
    z = {}
    loss = TraceMeanField_ELBO().differentiable_loss(scale_latents(beta, model), scale_latents(beta, _recording(guide, z)), x)
    log_lik, _, _, kl = _hand_terms(model, guide, x, z["z"])
    assert kl.item() > 0.05  # the KL term is not negligible, so a missing beta would show
    assert loss.item() == pytest.approx(-(log_lik - beta * kl).item(), rel=1e-12)


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_beta_one_is_the_plain_elbo(elbo):
    model, guide, x = _pair()
    pyro.set_rng_seed(3)
    plain = elbo().differentiable_loss(model, guide, x)
    pyro.set_rng_seed(3)
    with LatentScale(1.0):
        scaled = elbo().differentiable_loss(model, guide, x)
    assert scaled.item() == plain.item()


def test_latent_scale_leaves_the_likelihood_gradient_alone():
    """With beta = 0 the decoder's gradient is the gradient of log p(x|z) alone, as computed by hand."""
    model, guide, x = _pair()
    z = {}
    loss = Trace_ELBO().differentiable_loss(scale_latents(0.0, model), scale_latents(0.0, _recording(guide, z)), x)
    grads = torch.autograd.grad(loss, list(model.decoder.parameters()))
    log_lik = dist.Bernoulli(logits=model.decoder(z["z"].detach())).log_prob(x).sum()
    expected = torch.autograd.grad(-log_lik, list(model.decoder.parameters()))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_annealed_elbo_follows_the_schedule_during_training():
    model, guide, x = _pair()
    objective = AnnealedELBO(TraceMeanField_ELBO(), partial(linear_warmup, warmup_steps=4))
    trainer = Trainer(model, guide, objective, lr=1e-3)
    betas = []
    for _ in range(6):
        betas.append(objective.beta)
        trainer.step(x)
    # the trainer's parameter discovery (a call without backward) did not move the schedule
    assert betas == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert objective.step == trainer.steps == 6


def test_annealed_elbo_uses_the_current_beta_and_reports_the_true_elbo():
    model, guide, x = _pair()
    objective = AnnealedELBO(TraceMeanField_ELBO(), partial(linear_warmup, warmup_steps=10), auto_advance=False)
    objective.advance(3)
    z = {}
    loss = objective.differentiable_loss(model, _recording(guide, z), x)
    loss.backward()
    assert objective.step == 3  # auto_advance=False: only advance() moves it
    log_lik, _, _, kl = _hand_terms(model, guide, x, z["z"])
    assert loss.item() == pytest.approx(-(log_lik - 0.3 * kl).item(), rel=1e-12)
    pyro.set_rng_seed(1)
    reported = objective.loss(model, guide, x)
    pyro.set_rng_seed(1)
    assert reported == TraceMeanField_ELBO().loss(model, guide, x)
