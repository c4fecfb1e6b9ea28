"""The Gaussian mixture: exact log p(x), enumeration-based SVI recovers the components, estimators agree."""
import math

import pyro
import pytest
import torch

from ppl_vae.estimators import elbo, iwae_bound
from ppl_vae.models import GaussianMixture
from ppl_vae.training.gmm import fit_gmm


def test_log_marginal_matches_direct_logsumexp():
    gmm = GaussianMixture(3, 2, torch.tensor([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]]), init_scale=0.8)
    with torch.no_grad():
        gmm.logits.copy_(torch.tensor([0.1, -0.5, 0.3]))
    x = torch.randn(7, 2) * 3
    pi = torch.softmax(torch.tensor([0.1, -0.5, 0.3]), 0)
    direct = []
    for xi in x:
        terms = []
        for k in range(3):
            d = xi - gmm.locs[k]
            s = gmm.scales[k]
            terms.append(math.log(pi[k]) - 0.5 * ((d / s) ** 2).sum() - torch.log(s).sum() - math.log(2 * math.pi))
        direct.append(torch.logsumexp(torch.stack(terms), 0))
    assert torch.allclose(gmm.log_marginal(x), torch.stack(direct).detach(), atol=1e-10)
    assert torch.allclose(gmm.responsibilities(x).sum(-1), torch.ones(7))


def test_enumerated_svi_recovers_means_of_separated_clusters():
    true = GaussianMixture(3, 2, torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 6.0]]), init_scale=0.7)
    x, _ = true.sample(600)
    model, losses = fit_gmm(x, 3, num_steps=300, lr=0.05, seed=0)
    assert losses[-1] < losses[0]
    # every true mean has a fitted mean within 0.2
    dist = torch.cdist(true.locs.detach(), model.locs.detach())
    assert (dist.min(1).values < 0.2).all(), model.locs
    assert torch.allclose(model.scales.detach(), torch.full((3, 2), 0.7), atol=0.1)
    # the enumerated ELBO is exactly the log-likelihood per point
    assert losses[-1] == pytest.approx(-model.log_marginal(x).mean().item(), abs=0.01)


def test_estimators_on_discrete_latents():
    gmm = GaussianMixture(3, 2, torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]))
    x, _ = gmm.sample(5)
    exact = gmm.log_marginal(x).detach()
    assert torch.allclose(iwae_bound(gmm, gmm.exact_posterior_guide, x, num_samples=4).per_point, exact, atol=1e-8)

    def uniform_guide(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", pyro.distributions.Categorical(logits=torch.zeros(x.shape[0], 3)))

    lower = elbo(gmm, uniform_guide, x, num_samples=2000).per_point
    assert (lower < exact).all()
    # with a uniform q over 3 components, IWAE with many samples is exact too (a finite sum)
    assert torch.allclose(iwae_bound(gmm, uniform_guide, x, num_samples=20000).per_point, exact, atol=0.05)
