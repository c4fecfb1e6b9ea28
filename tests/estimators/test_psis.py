"""Pareto k̂ per data point: small when the guide is the exact posterior, large for a badly placed guide."""
import torch

from ppl_vae.estimators import elbo_and_iwae, log_weights, pareto_khat
from ppl_vae.estimators.psis import TopLogWeights
from ppl_vae.guides import PerDatapointNormal
from ppl_vae.models import LinearGaussian


def test_khat_exact_vs_bad_guide():
    model = LinearGaussian(x_dim=5, z_dim=2, noise=0.5)
    x = model.marginal().sample((5,)).detach()
    loc, cov = model.posterior(x)
    # a guide wider than the posterior (weights bounded): k̂ < 0.5
    wide = PerDatapointNormal({"z": 2}, 5, {"z": loc.detach()}, {"z": 2 * cov.diagonal().sqrt().detach().expand(5, 2)})
    # a badly placed, narrow guide: k̂ > 0.7
    bad = PerDatapointNormal({"z": 2}, 5, {"z": loc.detach() + 1.0}, {"z": torch.full((5, 2), 0.05)})
    k_wide = pareto_khat(log_weights(model, wide, x, num_samples=4000).detach())
    k_bad = pareto_khat(log_weights(model, bad, x, num_samples=4000).detach())
    assert (k_wide < 0.5).all(), k_wide
    assert (k_bad > 0.7).all(), k_bad


def test_streaming_tail_equals_full_computation():
    lw = torch.randn(3000, 4) * 2
    tracker = TopLogWeights(3000, 4)
    for chunk in lw.split(700):
        tracker.update(chunk)
    assert torch.allclose(tracker.khat(), pareto_khat(lw))


def test_elbo_and_iwae_agree_with_separate_estimators():
    model = LinearGaussian(x_dim=5, z_dim=2)
    x = model.marginal().sample((3,)).detach()
    e, i, k = elbo_and_iwae(model, model.exact_posterior_guide, x, num_samples=500)
    exact = model.log_marginal(x).detach()
    assert torch.allclose(e.per_point, exact, atol=1e-8) and torch.allclose(i.per_point, exact, atol=1e-8)
    assert k.shape == (3,)
