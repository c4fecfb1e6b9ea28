"""The IWAE bound against the linear-Gaussian model's exact log p(x), and Pyro's RenyiELBO pitfall."""
import math

import pyro
import torch

from ppl_vae.estimators import elbo, iwae_bound, log_weights
from ppl_vae.guides import PerDatapointNormal
from ppl_vae.models import LinearGaussian
from ppl_vae.objectives import IWAE_ELBO


def _setup(n=6):
    model = LinearGaussian(x_dim=5, z_dim=2, noise=0.5)
    x = model.marginal().sample((n,)).detach()
    loc, scale = model.optimal_ffg(x)
    # a deliberately mediocre guide: right mean, scales 1.5x too wide, so the ELBO gap is sizeable
    guide = PerDatapointNormal({"z": 2}, n, {"z": loc.detach()}, {"z": 1.5 * scale.detach().expand(n, 2)})
    return model, guide, x, model.log_marginal(x).detach()


def _expected_iwae(model, guide, x, k, reps):
    """E[IWAE_K] estimated by averaging ``reps`` independent IWAE_K values (one vectorized pass)."""
    lw = log_weights(model, guide, x, num_samples=k * reps).detach().reshape(reps, k, -1)
    return (lw.logsumexp(1) - math.log(k)).mean(0)


def test_iwae_increases_with_k_stays_below_and_converges():
    model, guide, x, exact = _setup()
    means = {k: _expected_iwae(model, guide, x, k, reps=20000 // k) for k in (1, 10, 100)}
    # the standard error of these means is < 0.01 nats; the steps between K are > 0.03 nats here
    assert (means[1] < means[10]).all() and (means[10] < means[100]).all()
    assert (means[1] < exact - 0.1).all() and (means[100] < exact + 0.02).all()  # below log p(x), up to noise
    # K = 1 is the ELBO: the closed form of this Gaussian guide, within 0.03 nats
    scale = guide.loc_scale(torch.arange(6))[1].detach()
    closed = model.elbo_gaussian(x, guide.loc.detach(), torch.diag_embed(scale**2)).detach()
    assert torch.allclose(means[1], closed, atol=0.03)
    # one IWAE-5000 reaches log p(x) within 0.05 nats
    assert torch.allclose(iwae_bound(model, guide, x, num_samples=5000).per_point, exact, atol=0.05)


def test_exact_posterior_guide_gives_log_marginal():
    model = LinearGaussian(x_dim=4, z_dim=3)
    x = model.marginal().sample((5,)).detach()
    exact = model.log_marginal(x).detach()
    for k in (1, 7):
        assert torch.allclose(iwae_bound(model, model.exact_posterior_guide, x, num_samples=k).per_point, exact, atol=1e-8)
    assert torch.allclose(elbo(model, model.exact_posterior_guide, x, num_samples=3).per_point, exact, atol=1e-8)


def test_memory_chunking_gives_the_same_bound():
    model, guide, x, _ = _setup()
    pyro.set_rng_seed(3)
    a = iwae_bound(model, guide, x, num_samples=2000).per_point
    pyro.set_rng_seed(3)
    b = iwae_bound(model, guide, x, num_samples=2000, max_rows=300).per_point  # 300-sample chunks
    assert torch.allclose(a, b, atol=0.1)  # two independent IWAE-2000 draws (sd ~0.02 nats)


def test_iwae_objective_is_a_bound_where_renyi_alpha_0_is_not():
    """With a subsampled data plate (minibatch scale N/B), Pyro's RenyiELBO(alpha=0) log-sum-exps the *scaled*
    per-point weights (pyro issue 3104): its value exceeds log p(x), so it is not a bound. IWAE_ELBO
    log-sum-exps each point's own weights and, like Pyro's ELBOs, scales the batch sum by N/B outside."""
    lg = LinearGaussian(x_dim=5, z_dim=2, noise=0.5)
    total, batch = 50, 10
    x_all = lg.marginal().sample((total,)).detach()
    loc, scale = lg.optimal_ffg(x_all)
    loc, scale = loc.detach(), 2 * scale.detach().expand(total, 2)

    def model(x, idx):
        with pyro.plate("data", total, subsample=idx):
            z = pyro.sample("z", pyro.distributions.Normal(torch.zeros(len(idx), 2), 1.0).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(z @ lg.weight.T.detach() + lg.bias.detach(), lg.noise.detach()).to_event(1), obs=x)

    def guide(x, idx):
        with pyro.plate("data", total, subsample=idx):
            pyro.sample("z", pyro.distributions.Normal(loc[idx], scale[idx]).to_event(1))

    idx = torch.arange(batch)
    x = x_all[idx]
    k = 100
    exact = lg.log_marginal(x).detach().sum()
    renyi = -torch.tensor([pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True,
                                                max_plate_nesting=1).loss(model, guide, x, idx) for _ in range(20)])
    ours = -torch.tensor([IWAE_ELBO(k).loss(model, guide, x, idx) for _ in range(20)]) / (total / batch)
    assert 0 < exact - ours.mean() < 0.2  # a tight per-point bound on the batch (sd of one draw ~0.3 nats)
    assert (renyi / (total / batch) > exact + 1).all(), (renyi / (total / batch), exact)  # above log p(x)


def test_iwae_training_gradient_reaches_guide():
    model, guide, x, _ = _setup()
    loss = IWAE_ELBO(5).differentiable_loss(model, guide, x, torch.arange(6))
    loss.backward()
    assert guide.loc.grad.abs().sum() > 0 and model.weight.grad.abs().sum() > 0
