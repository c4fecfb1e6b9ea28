"""Free bits: the per-dimension KL floor, its gradient, and the true ELBO it reports."""
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch import nn

from ppl_vae.objectives.free_bits import FreeBitsELBO

N, X_DIM, D = 6, 5, 4


def _loc():
    """Guide means ``(N, D)``: dimension 0 far from the prior (KL above the floors used below), 1-3 close."""
    return torch.tensor([[2.0, 0.05, -0.1, 0.0]]).repeat(N, 1) + 0.1 * torch.arange(N).unsqueeze(-1)


def _scale():
    return torch.tensor([0.3, 0.95, 0.9, 1.0])


class Decoder(nn.Module):
    """``x ~ Bernoulli(logits = z W + b)``; with ``uses=1`` only ``z_0`` enters the likelihood."""

    def __init__(self, uses: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(D, X_DIM))
        with torch.no_grad():
            self.weight[:uses] = torch.linspace(-1, 1, X_DIM)
        self.bias = nn.Parameter(torch.linspace(-0.5, 0.5, X_DIM))

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], D), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z @ self.weight + self.bias).to_event(1), obs=x)


class Guide(nn.Module):
    """Free parameters ``loc (N, D)``, ``scale (D,)``: their gradients are the gradients of the guide's outputs."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(_loc())
        self.scale = nn.Parameter(_scale())

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc, self.scale).to_event(1))


def _kl_per_dim():
    """Mean KL(N(m, s) || N(0, 1)) per dimension over the points, from the closed form."""
    loc, scale = _loc(), _scale()
    return (0.5 * (scale**2 + loc**2 - 1) - scale.log()).mean(0)


@pytest.fixture
def x():
    return torch.bernoulli(torch.full((N, X_DIM), 0.4), generator=torch.Generator().manual_seed(0))


def test_floor_contributes_exactly_lambda_per_dimension(x):
    """A decoder that ignores z makes the likelihood exact: loss = -log p(x) + N sum_d max(lambda, KL_d)."""
    kl = _kl_per_dim()
    lam = 0.2
    assert kl[0] > lam and (kl[1:] < lam).all()
    model, guide = Decoder(uses=0), Guide()
    log_lik = dist.Bernoulli(logits=model.bias).log_prob(x).sum()
    loss = FreeBitsELBO(free_bits_per_dim=lam).differentiable_loss(model, guide, x)
    expected = -log_lik + N * (kl[0] + 3 * lam)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    true_elbo = FreeBitsELBO(free_bits_per_dim=lam).loss(model, guide, x)
    assert true_elbo == pytest.approx((-log_lik + N * kl.sum()).item(), rel=1e-12)


def test_floored_dimensions_get_no_gradient(x):
    """Only z_0 enters the likelihood, so dimensions 1-3 get gradient from their KL alone: none when floored."""
    model, guide = Decoder(uses=1), Guide()
    FreeBitsELBO(free_bits_per_dim=0.2).differentiable_loss(model, guide, x).backward()
    assert (guide.loc.grad[:, 1:] == 0).all() and (guide.scale.grad[1:] == 0).all()
    assert (guide.loc.grad[:, 0] != 0).all() and guide.scale.grad[0] != 0
    # without the floor the same dimensions are pulled to the prior: the gradient is the KL's, N * dKL_d/dloc / N
    guide.zero_grad()
    FreeBitsELBO(free_bits_per_dim=0.0).differentiable_loss(model, guide, x).backward()
    loc, scale = _loc(), _scale()
    torch.testing.assert_close(guide.loc.grad[:, 1:], loc[:, 1:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(guide.scale.grad[1:], N * (scale[1:] - 1 / scale[1:]), rtol=1e-12, atol=1e-12)


def test_lambda_zero_is_the_mean_field_elbo(x):
    model, guide = Decoder(uses=D), Guide()
    pyro.set_rng_seed(5)
    floorless = FreeBitsELBO(free_bits_per_dim=0.0).differentiable_loss(model, guide, x)
    pyro.set_rng_seed(5)
    reported = FreeBitsELBO(free_bits_per_dim=0.0).loss(model, guide, x)
    assert floorless.item() == pytest.approx(reported, rel=1e-12)
    # and matches Pyro's analytic-KL ELBO in expectation (different random draws: compare many particles)
    ours = FreeBitsELBO(free_bits_per_dim=0.0, num_particles=4000).loss(model, guide, x)
    pyros = TraceMeanField_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, x)
    assert ours == pytest.approx(pyros, abs=0.5)  # Monte Carlo error: sd of the difference ~0.1 nats


def test_reported_loss_is_the_true_elbo_whatever_lambda(x):
    model, guide = Decoder(uses=D), Guide()
    values = []
    for lam in (0.0, 0.2, 5.0):
        pyro.set_rng_seed(7)
        values.append(FreeBitsELBO(free_bits_per_dim=lam).loss(model, guide, x))
    assert values[0] == values[1] == values[2]
    pyro.set_rng_seed(7)
    floored = FreeBitsELBO(free_bits_per_dim=5.0).differentiable_loss(model, guide, x).item()
    assert floored == pytest.approx(values[0] + N * (4 * 5.0 - _kl_per_dim().sum().item()), rel=1e-12)


def test_trains_with_the_trainer(x):
    from ppl_vae.training.trainer import Trainer

    model, guide = Decoder(uses=D), Guide()
    trainer = Trainer(model, guide, FreeBitsELBO(free_bits_per_dim=0.1), lr=5e-2)
    first = trainer.step(x)
    for _ in range(20):
        last = trainer.step(x)
    assert last < first - 0.5


def test_non_normal_site_is_refused(x):
    def guide(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Laplace(torch.zeros(x.shape[0], D), 1.0).to_event(1))

    with pytest.raises(ValueError, match="Expected a Normal guide and a Normal prior at latent site 'z'"):
        FreeBitsELBO(free_bits_per_dim=0.1).differentiable_loss(Decoder(uses=D), guide, x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Expected free_bits_per_dim finite and >= 0"):
        FreeBitsELBO(free_bits_per_dim=-0.5)
    with pytest.raises(ValueError, match="Expected num_particles >= 1"):
        FreeBitsELBO(free_bits_per_dim=0.5, num_particles=0)
