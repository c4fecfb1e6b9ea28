"""Posterior-collapse diagnostics on a hand-built guide whose active and collapsed dimensions are known."""
import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.diagnostics.collapse import active_units, kl_per_dimension
from ppl_vae.figures.training import plot_collapse

N = 40


def _data():
    return torch.bernoulli(torch.full((N, 6), 0.5), generator=torch.Generator().manual_seed(1))


def model(x, idx=None):
    """Two latent sites, ``a`` (2 dims) and ``b`` (3 dims), Normal(0, 1) priors."""
    with pyro.plate("data", x.shape[0]):
        a = pyro.sample("a", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(torch.zeros(x.shape[0], 3), 1.0).to_event(1))
        logits = torch.cat([a, b], -1).sum(-1, keepdim=True).expand(*a.shape[:-1], 6)
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def guide_params(x):
    """Means ``(N, 5)`` and scales ``(5,)``. Dimensions (a_0, a_1, b_0, b_1, b_2):
    a_0 and b_1 depend on the data (active); a_1 is the prior exactly (collapsed, KL 0); b_0 has a constant mean
    away from the prior (KL > 0 but inactive: the same for every x); b_2 varies with x by 0.05 (variance < 0.01)."""
    n = x.shape[0]
    loc = torch.stack([
        2 * x[:, 0] - 1,
        torch.zeros(n),
        torch.full((n,), 0.7),
        1.5 * x[:, 1] + x[:, 2],
        0.05 * (2 * x[:, 3] - 1),
    ], -1)
    scale = torch.tensor([0.4, 1.0, 0.5, 0.8, 1.0])
    return loc, scale


def guide(x, idx=None):
    loc, scale = guide_params(x)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("a", dist.Normal(loc[:, :2], scale[:2]).to_event(1))
        pyro.sample("b", dist.Normal(loc[:, 2:], scale[2:]).to_event(1))


def test_kl_per_dimension_matches_the_closed_form():
    x = _data()
    loc, scale = guide_params(x)
    expected = (0.5 * (scale**2 + loc**2 - 1) - scale.log()).mean(0)
    kl = kl_per_dimension(model, guide, x, chunk_size=15)  # chunks of 15, 15, 10 points
    assert kl.shape == (5,)
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-14)
    assert kl[1] == 0 and kl[4] < 1e-2 and (kl[[0, 2, 3]] > 0.1).all()


def test_active_units_matches_the_variance_of_the_means():
    x = _data()
    loc, _ = guide_params(x)
    count, variances = active_units(guide, x)
    torch.testing.assert_close(variances, loc.var(0), rtol=1e-12, atol=1e-14)
    assert count == 2
    assert (variances[[0, 3]] > 0.2).all() and variances[1] == 0 and variances[2] == 0
    assert 0 < variances[4] < 0.01
    assert active_units(guide, x, threshold=1e-4).count == 3  # a lower threshold counts b_2 too


def test_active_units_of_a_point_mass_guide():
    from ppl_vae.models.autoencoder import DeltaEncoder

    encoder = DeltaEncoder(x_dim=6, z_dim=3, hidden=(4,))
    x = _data()
    count, variances = active_units(encoder, x)
    torch.testing.assert_close(variances, encoder.encode(x).detach().var(0), rtol=1e-12, atol=1e-14)
    assert count == int((variances > 0.01).sum())


def test_non_normal_sites_are_refused():
    def laplace_guide(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Laplace(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("b", dist.Normal(torch.zeros(x.shape[0], 3), 1.0).to_event(1))

    with pytest.raises(ValueError, match="Expected a Normal guide and a Normal prior at latent site 'a'"):
        kl_per_dimension(model, laplace_guide, _data())


def test_flow_guide_without_a_closed_form_mean_is_refused():
    def flow_guide(x, idx=None):
        base = dist.Normal(torch.zeros(x.shape[0], 2), 1.0)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.TransformedDistribution(base, [dist.transforms.SoftplusTransform()]).to_event(1))

    with pytest.raises(ValueError, match="site 'a' to have a closed-form mean"):
        active_units(flow_guide, _data())


def test_plot_collapse_saves_figures(tmp_path):
    kl = kl_per_dimension(model, guide, _data())
    assert plot_collapse(kl, tmp_path / "bars.png").stat().st_size > 1000
    history = torch.stack([kl * t / 4 for t in range(1, 5)])
    assert plot_collapse(history, tmp_path / "history.png", title="toy").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"Expected kl of shape \(D,\) or \(epochs, D\)"):
        plot_collapse(torch.zeros(2, 3, 4), tmp_path / "bad.png")
