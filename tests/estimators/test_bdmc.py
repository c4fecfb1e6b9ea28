"""Bidirectional Monte Carlo against the linear-Gaussian model's exact log p(x): forward AIS below, reverse AIS from
the exact posterior sample above, and the sandwich closing as the chains lengthen."""
import pyro
import pytest
import torch

from ppl_vae.estimators.bdmc import bdmc, simulate
from ppl_vae.guides import PerDatapointFlow
from ppl_vae.models import LinearGaussian


def _model():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 1, generator=g), torch.randn(5, 1, generator=g)
    return LinearGaussian(5, 2, noise=0.5, weight=torch.cat([a, 0.8 * a + 0.6 * b], 1))


def test_simulated_latents_are_exact_posterior_samples():
    """(z, x) drawn from the model: x follows the marginal and z the prior (so z | x the posterior)."""
    model = _model()
    pyro.set_rng_seed(0)
    x, u = simulate(model, torch.zeros(4000, 5))
    assert x.shape == (4000, 5) and u.shape == (4000, 2)
    assert torch.allclose(u.mean(0), torch.zeros(2), atol=0.06) and torch.allclose(u.std(0), torch.ones(2), atol=0.05)
    residual = x - u @ model.weight.detach().T
    assert residual.std().item() == pytest.approx(0.5, abs=0.02)  # x | z ~ N(W z, 0.5^2)


def test_bounds_bracket_the_exact_value_and_close_as_steps_grow():
    model = _model()
    pyro.set_rng_seed(0)
    x, u = simulate(model, torch.zeros(20, 5))
    exact = model.log_marginal(x).detach()
    gaps = {}
    for steps in (5, 100):
        r = bdmc(model, x, posterior_u=u, num_chains=8, num_steps=steps, leapfrog_steps=5)
        # the lower bound's mean is below log p(x) and the upper's above, by more than their standard errors allow
        # to be chance (the bounds hold in expectation; seeds fixed)
        assert r.lower.mean < exact.mean().item() + 2 * r.lower.stderr
        assert r.upper.mean > exact.mean().item() - 2 * r.upper.stderr
        gaps[steps] = r.gap.mean().item()
        assert r.info["num_steps"] == steps and r.lower.per_point.shape == r.upper.per_point.shape == (20,)
    # measured: 3.45 nats at 5 steps, 0.42 at 100, where the means are 0.12 below and 0.30 above the exact mean
    assert gaps[5] > 2.0 and gaps[100] < 0.6
    assert abs(r.lower.mean - exact.mean().item()) < 0.4 and abs(r.upper.mean - exact.mean().item()) < 0.4


def test_simulates_when_no_posterior_sample_is_given_and_starts_from_a_guide():
    model = _model()
    template = torch.zeros(6, 5)
    guide = PerDatapointFlow({"z": 2}, 6)  # N(0, I) through coupling layers at the identity: the prior
    pyro.set_rng_seed(1)
    r = bdmc(model, template, guide=guide, num_chains=4, num_steps=20, leapfrog_steps=5)
    assert not torch.equal(r.x, template) and r.x.shape == template.shape  # simulated, not the template
    exact = model.log_marginal(r.x).detach()
    assert r.lower.mean < exact.mean().item() < r.upper.mean
    assert r.info["start"] == "guide" and r.to_dict(per_point=False)["gap"]["mean"] == pytest.approx(r.gap.mean().item())


def test_refusals():
    model = _model()
    x = torch.zeros(3, 5)
    with pytest.raises(ValueError, match=r"Expected posterior_u of shape \(3, 2\)"):
        bdmc(model, x, posterior_u=torch.zeros(3, 3), num_steps=2)
    with pytest.raises(ValueError, match="Expected num_chains to be an integer >= 1"):
        bdmc(model, x, num_chains=0, num_steps=2)
    with pytest.raises(ValueError, match="Expected num_steps to be an integer >= 1"):
        bdmc(model, x, num_steps=0)
    planar = PerDatapointFlow({"z": 2}, 3, flow="planar")
    with pytest.raises(ValueError, match="cannot score latents it did not sample"):
        bdmc(model, x, guide=planar, num_steps=2)


def _soft_constrained(x, idx=None):
    """A model with a second observed site: pyro.factor pulls z towards 4, which a draw from the prior ignores."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))
        pyro.factor("soft", pyro.distributions.Normal(4.0, 0.1).log_prob(z))
        pyro.sample("x", pyro.distributions.Normal(z[..., None] * torch.ones(3), 1.0).to_event(1), obs=x)


def test_refuses_to_simulate_a_model_with_other_observed_sites():
    """Simulating z from the prior would not give posterior samples here (the 'upper bound' fell 137 nats below the
    exact log p(x) at 10 steps), so the model is refused by the site's name; exact posterior samples can be passed."""
    with pytest.raises(ValueError, match=r"observed sites other than the data x: \['soft'\]"):
        bdmc(_soft_constrained, torch.zeros(4, 3), num_steps=5)
    r = bdmc(_soft_constrained, torch.zeros(4, 3), posterior_u=torch.full((4, 1), 4.0), num_chains=2, num_steps=3)
    assert r.upper.per_point.shape == (4,)


@pytest.mark.parametrize("bad, match", [
    ({"step_size": 0.0}, r"Expected step_size to be a finite number > 0, got 0.0"),
    ({"step_size": float("nan")}, r"Expected step_size to be a finite number > 0, got nan"),
    ({"target_accept": 1.5}, r"Expected target_accept in \(0, 1\) or None, got 1.5"),
    ({"max_rows": 0}, r"Expected max_rows to be an integer >= 1, got 0"),
    ({"num_steps": 2.5}, r"Expected num_steps to be an integer >= 1, got 2.5"),
    ({"num_chains": 0}, r"Expected num_chains to be an integer >= 1, got 0"),
])
def test_refuses_settings_out_of_range(bad, match):
    from ppl_vae.estimators import ais
    model = _model()
    with pytest.raises(ValueError, match=match):
        bdmc(model, torch.zeros(2, 5), **bad)
    with pytest.raises(ValueError, match=match):
        ais(model, torch.zeros(2, 5), **bad)
