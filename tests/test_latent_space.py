"""The latent-space layer: round trips, Jacobians (densities in u-space integrate to one), enumeration with nested
plates, masks, the model-free space of the simple guides, and the refusals."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate

from ppl_vae.latent_space import LatentSpace, as_latent_space
from ppl_vae.traces import point_log_density, trace_particles


def constrained(x, idx=None):
    with pyro.plate("data", x.shape[0]):
        s = pyro.sample("s", dist.Gamma(2.0, 1.5))
        theta = pyro.sample("theta", dist.Dirichlet(torch.tensor([2.0, 1.0, 3.0])))
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
        mean = w.sum((-1, -2))[..., None] + theta[..., :1] + s[..., None]
        pyro.sample("x", dist.Normal(mean.expand(*mean.shape[:-1], 2), 1.0).to_event(1), obs=x)


def test_round_trip_and_layout():
    x = torch.randn(4, 2)
    space = LatentSpace(constrained, x)
    assert space.dim == 1 + 2 + 6 and space.names == ["s", "theta", "w"]
    u = torch.randn(5, 4, space.dim)
    latents, log_det = space.constrain(u)
    assert latents["s"].shape == (5, 4) and (latents["s"] > 0).all()
    assert latents["theta"].shape == (5, 4, 3) and torch.allclose(latents["theta"].sum(-1), torch.ones(5, 4))
    assert latents["w"].shape == (5, 4, 2, 3)
    back, log_det_back = space.unconstrain(latents)
    assert torch.allclose(back, u, atol=1e-10) and torch.allclose(log_det_back, log_det)
    assert space.coordinate_names()[:3] == ["s (unconstrained)", "theta[0] (unconstrained)", "theta[1] (unconstrained)"]
    with pytest.raises(ValueError, match=r"Expected u of shape \(S, N, 9\)"):
        space.constrain(u[..., :4])


@pytest.mark.parametrize("site, grid", [("s", 4000), ("theta", 300)])
def test_prior_density_in_u_space_integrates_to_one(site, grid):
    """The prior of one constrained site, in u-space with its Jacobian, integrates to 1: the Jacobian terms are
    right (a missing or wrong term would integrate to something else)."""
    def model(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            if site == "s":
                pyro.sample("s", dist.Gamma(2.0, 1.5))
            else:
                pyro.sample("theta", dist.Dirichlet(torch.tensor([2.0, 1.0, 3.0])))
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    x = torch.zeros(1)
    space = LatentSpace(model, x)
    t = torch.linspace(-12, 12, grid)
    u = t[:, None, None] if space.dim == 1 else torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 1, 2)
    log_prior, _ = space.log_joint(x, None, u)
    cell = (t[1] - t[0]) ** space.dim
    assert (log_prior.exp().sum() * cell).item() == pytest.approx(1.0, abs=2e-3)


def test_enumeration_with_nested_plates_matches_the_sum_by_hand():
    """A discrete site per point, observations in a plate nested in the data plate: Pyro's contraction multiplies the
    nested plate out before summing the component out."""
    locs = torch.tensor([-1.0, 2.0])

    @config_enumerate
    def model(x, idx=None):
        with pyro.plate("data", x.shape[0], dim=-2):
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.3, 0.7])))
            z = pyro.sample("z", dist.Normal(locs[c], 1.0))
            with pyro.plate("features", 3, dim=-1):
                pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    x = torch.randn(4, 3)
    space = LatentSpace(model, x)
    assert space.dim == 1 and list(space.enumerated) == ["c"]
    u = torch.randn(6, 4, 1)
    log_prior, log_lik = space.log_joint(x, None, u)
    z = u[..., 0]
    joint = (torch.tensor([0.3, 0.7]).log() + dist.Normal(locs, 1.0).log_prob(z[..., None]))
    assert torch.allclose(log_prior, joint.logsumexp(-1))
    assert torch.allclose(log_lik, dist.Normal(z[..., None], 0.5).log_prob(x).sum(-1))


def test_masked_entries_count_with_their_own_density():
    m = torch.tensor([[True, False], [True, True]])

    def model(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).mask(m).to_event(1))
            pyro.sample("x", dist.Normal((z * m).sum(-1), 1.0), obs=x)

    x = torch.randn(2)
    space = LatentSpace(model, x)
    u = torch.randn(3, 2, 2)
    log_prior, _ = space.log_joint(x, None, u)
    assert torch.allclose(log_prior, dist.Normal(0.0, 1.0).log_prob(u).sum(-1))  # proper, masked entry included
    trace = trace_particles(model, x, torch.arange(2), 1, 1)
    masked = point_log_density(trace, ["z"], 1, 1, 2)
    assert torch.allclose(masked[0, 0], dist.Normal(0.0, 1.0).log_prob(trace.nodes["z"]["value"][0, 0, 0]))


def test_spaces_without_a_model_and_refusals():
    space = as_latent_space({"z": 3, "y": 2})
    assert space.dim == 5 and space.names == ["z", "y"]
    with pytest.raises(ValueError, match="built from site sizes, without a model: it has no log_joint"):
        space.log_joint(torch.zeros(1, 4), None, torch.zeros(1, 1, 5))
    with pytest.raises(ValueError, match=r"Expected latent sites \{name: size >= 1\}"):
        as_latent_space({"z": 0})
    with pytest.raises(TypeError, match="Expected a LatentSpace"):
        as_latent_space([3])

    def coin(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            b = pyro.sample("b", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(b, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"AIS needs continuous latents, but latent site 'b' is discrete"):
        LatentSpace(coin, torch.zeros(2)).require_continuous("AIS")

    def global_latent(x, idx=None):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(g, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"Latent site 'g' is not inside pyro.plate\('data'\)"):
        LatentSpace(global_latent, torch.zeros(2))


def test_model_that_does_not_broadcast_is_refused_with_the_convention():
    def fixed_shapes(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.reshape(x.shape[0], 2).sum(-1), 1.0), obs=x)

    with pytest.raises(ValueError, match=r"(?s)model failed when run as the estimators run it.*must broadcast"):
        LatentSpace(fixed_shapes, torch.zeros(3))
