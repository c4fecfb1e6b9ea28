"""The oracle itself: its closed forms against brute-force numerics."""
import math

import pyro
import torch

from ppl_vae.models import LinearGaussian


def test_log_marginal_matches_quadrature_in_1d():
    model = LinearGaussian(x_dim=3, z_dim=1, noise=0.7)
    x = model.marginal().sample((4,))
    z = torch.linspace(-12, 12, 20001)
    log_joint = (
        torch.distributions.Normal(0, 1).log_prob(z)[:, None]
        + torch.distributions.Normal(z[:, None, None] * model.weight[:, 0] + model.bias, model.noise).log_prob(x).sum(-1)
    )
    quad = torch.logsumexp(log_joint, 0) + math.log(z[1] - z[0])
    assert torch.allclose(quad, model.log_marginal(x), atol=1e-6)


def test_posterior_is_bayes_rule():
    model = LinearGaussian(x_dim=4, z_dim=2)
    x = model.marginal().sample((3,))
    loc, cov = model.posterior(x)
    z = torch.randn(3, 2)
    log_joint = (
        torch.distributions.Normal(0, 1).log_prob(z).sum(-1)
        + torch.distributions.Normal(z @ model.weight.T + model.bias, model.noise).log_prob(x).sum(-1)
    )
    log_post = torch.distributions.MultivariateNormal(loc, cov).log_prob(z)
    assert torch.allclose(log_joint - log_post, model.log_marginal(x), atol=1e-8)


def test_elbo_of_posterior_is_log_marginal_and_ffg_gap():
    model = LinearGaussian(x_dim=5, z_dim=3)
    x = model.marginal().sample((6,))
    loc, cov = model.posterior(x)
    assert torch.allclose(model.elbo_gaussian(x, loc, cov), model.log_marginal(x), atol=1e-8)
    ffg_loc, ffg_scale = model.optimal_ffg(x)
    ffg = model.elbo_gaussian(x, ffg_loc, torch.diag(ffg_scale**2))
    gap = model.log_marginal(x) - ffg
    assert torch.allclose(gap, model.ffg_approximation_gap().expand(6), atol=1e-8)
    # any other diagonal Gaussian does worse
    assert (model.elbo_gaussian(x, ffg_loc, torch.diag(ffg_scale**2) * 1.2) < ffg).all()
    assert (model.elbo_gaussian(x, ffg_loc + 0.1, torch.diag(ffg_scale**2)) < ffg).all()


def test_model_sites():
    model = LinearGaussian(x_dim=5, z_dim=2)
    trace = pyro.poutine.trace(model).get_trace(torch.zeros(7, 5))
    assert trace.nodes["z"]["value"].shape == (7, 2) and trace.nodes["x"]["is_observed"]
