"""Monte-Carlo ELBOs (Pyro's Trace_ELBO / TraceMeanField_ELBO and ours) against the closed-form ELBO of the
linear-Gaussian model."""
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae.estimators import elbo, log_weights
from ppl_vae.guides import PerDatapointNormal
from ppl_vae.models import LinearGaussian


@pytest.fixture
def setup():
    model = LinearGaussian(x_dim=5, z_dim=2, noise=0.5)
    x = model.marginal().sample((8,))
    loc, _ = model.posterior(x)
    scale = torch.full((8, 2), 0.3)
    guide = PerDatapointNormal({"z": 2}, 8, {"z": loc + 0.2}, {"z": scale})  # a fixed, imperfect Gaussian guide
    exact = model.elbo_gaussian(x, loc + 0.2, torch.diag_embed(scale**2))
    return model, guide, x, exact


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_pyro_elbo_matches_closed_form(setup, elbo_cls):
    model, guide, x, exact = setup
    n = 4000
    with torch.no_grad():
        losses = torch.tensor([elbo_cls().loss(model, guide, x) for _ in range(n)])
    mc = -losses.mean()
    se = losses.std() / n**0.5
    # within 4 Monte-Carlo standard errors (plus float slack)
    assert abs(mc - exact.sum()) < 4 * se + 1e-6, (mc, exact.sum(), se)


@pytest.mark.parametrize("analytic_kl", [False, True])
def test_per_point_elbo_matches_closed_form(setup, analytic_kl):
    model, guide, x, exact = setup
    est = elbo(model, guide, x, num_samples=20000, analytic_kl=analytic_kl)
    assert est.per_point.shape == (8,)
    # per-point MC standard error at S=20000 is ~0.02 nats here; tolerance 0.1 nats
    assert torch.allclose(est.per_point, exact, atol=0.1)


def test_exact_posterior_guide_gives_log_marginal_exactly():
    model = LinearGaussian(x_dim=5, z_dim=3)
    x = model.marginal().sample((6,))
    lw = log_weights(model, model.exact_posterior_guide, x, num_samples=10)
    assert lw.shape == (10, 6)
    # zero-variance weights: every sample equals log p(x)
    assert torch.allclose(lw, model.log_marginal(x).detach().expand(10, 6), atol=1e-8)


def test_chunking_does_not_change_the_estimate(setup):
    model, guide, x, _ = setup
    pyro.set_rng_seed(1)
    a = elbo(model, guide, x, num_samples=64, max_rows=10**6).per_point
    pyro.set_rng_seed(1)
    b = elbo(model, guide, x, num_samples=64, max_rows=16).per_point  # 1 point x 16 samples per pass
    assert torch.allclose(a.mean(), b.mean(), atol=0.2) and b.shape == (8,)
