"""Pareto k̂ per data point: small when the guide is the exact posterior, large for a badly placed guide."""
import warnings

import arviz as az
import numpy as np
import pytest
import torch

from ppl_vae.estimators import elbo_and_iwae, khat_threshold, log_weights, pareto_khat
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


# -- agreement with ArviZ ----------------------------------------------------------------------------------------


def _gpd_log_weights(k: float, num_samples: int, num_points: int, seed: int) -> torch.Tensor:
    """Log-weights whose weights follow a generalized Pareto distribution of shape ``k`` (heavy-tailed for k > 0.5:
    infinite variance; k > 1: infinite mean)."""
    u = torch.rand(num_samples, num_points, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ((u.pow(-k) - 1) / k).log()


@pytest.mark.parametrize("k", [0.3, 0.6, 0.9, 1.3])
@pytest.mark.parametrize("num_samples", [100, 1000, 5000])
def test_khat_equals_arviz_psislw_on_heavy_tails(k, num_samples):
    lw = _gpd_log_weights(k, num_samples, 6, seed=int(10 * k) + num_samples)
    _, expected = az.psislw(lw.T.numpy())
    assert np.allclose(pareto_khat(lw).numpy(), expected, rtol=0, atol=1e-10)


def test_khat_equals_arviz_psislw_for_a_narrow_gaussian_proposal():
    """Target N(0, 1), proposal N(0, 0.6^2): the weights' tail has k = 1 - 0.6^2 = 0.64 (Vehtari et al. 2024)."""
    z = torch.randn(4000, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.6
    lw = torch.distributions.Normal(0.0, 1.0).log_prob(z) - torch.distributions.Normal(0.0, 0.6).log_prob(z)
    _, expected = az.psislw(lw.T.numpy())
    assert np.allclose(pareto_khat(lw).numpy(), expected, rtol=0, atol=1e-10)
    assert abs(pareto_khat(lw).mean().item() - 0.64) < 0.15


@pytest.mark.parametrize("num_samples", [20, 100, 1000, 2000, 2155, 5000, 100000])
def test_khat_threshold_is_arvizs_good_k(num_samples):
    rng = np.random.default_rng(0)
    idata = az.from_dict(posterior={"a": rng.normal(size=(1, num_samples))},
                         log_likelihood={"y": rng.normal(size=(1, num_samples, 3))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good_k = az.loo(idata, pointwise=True).good_k
    assert khat_threshold(num_samples) == pytest.approx(good_k, abs=1e-12)


def test_khat_threshold_values_and_errors():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(2 / 3)
    assert khat_threshold(10**6) == 0.7
    assert khat_threshold(10) == 0.0 and khat_threshold(3) == 0.0  # ArviZ: 0 at S = 10, negative below
    with pytest.raises(ValueError, match="Expected num_samples >= 1"):
        khat_threshold(0)


def test_posterior_diagnostics_choose_on_one_half_and_report_the_other():
    """log p̂(x) in the posterior diagnostics is never a maximum over the samplers' noisy IWAEs: the sampler is chosen
    on the first half of every sampler's draws and its IWAE from the second half is reported. A sampler whose first
    half happened to be high but whose second half is low is chosen, and its low value reported."""
    from ppl_vae.posterior import Draws, diagnostics, to_inference_data

    steady = Draws(latents={"z": torch.zeros(1, 100, 1, 2)}, log_joint=torch.full((1, 100, 1), -1.0),
                   log_q=torch.zeros(1, 100, 1))
    lucky = torch.full((1, 100, 1), -4.0)
    lucky[0, 3] = 5.0  # one large weight in the first half
    lucky = Draws(latents={"z": torch.zeros(1, 100, 1, 2)}, log_joint=lucky, log_q=torch.zeros(1, 100, 1))
    rows = {r["sampler"]: r for r in diagnostics(to_inference_data({"steady": steady, "lucky": lucky},
                                                                   torch.zeros(1, 4), torch.tensor([0])))}
    assert rows["lucky"]["log_p_hat_from"] == "lucky"
    assert rows["lucky"]["log_p_hat"] == pytest.approx(-4.0)  # the second half's IWAE, not the maximum
    assert rows["lucky"]["iwae"] > rows["steady"]["iwae"]  # a per-point maximum would have reported this one
