"""Posterior export to ArviZ, the NUTS reference, grid posteriors and diagnostics, on the linear-Gaussian model."""
import arviz as az
import pytest
import torch

from ppl_vae.figures.posterior import grid_log_posterior
from ppl_vae.guides import PerDatapointNormal
from ppl_vae.models import LinearGaussian
from ppl_vae.posterior import diagnostics, guide_draws, nuts_draws, to_inference_data


@pytest.fixture(scope="module")
def setup():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = LinearGaussian(x_dim=5, z_dim=2, noise=0.5)
        x = model.marginal().sample((3,)).detach()
        idx = torch.tensor([10, 20, 30])
        nuts, _ = nuts_draws(model, x, idx, num_chains=2, num_draws=400, warmup=200, seed=0)
    finally:
        torch.set_default_dtype(dtype)
    return model, x, idx, nuts


def test_nuts_matches_exact_posterior(setup):
    model, x, idx, nuts = setup
    loc, cov = model.posterior(x)
    z = nuts["latents"]["z"].reshape(-1, 3, 2)
    # 800 draws (ESS > 300): the mean within 0.25 posterior sd, the covariance within 25%
    sd = cov.diagonal().sqrt()
    assert ((z.mean(0) - loc.detach()).abs() / sd < 0.25).all()
    for n in range(3):
        emp = torch.cov(z[:, n].T)
        assert torch.allclose(emp, cov.detach(), atol=0.25 * sd.max().item() ** 2), (emp, cov)
    idata = to_inference_data({"nuts": nuts}, x, idx)
    summary = az.summary(idata, var_names=["z_nuts"], kind="diagnostics")
    assert (summary["r_hat"] < 1.05).all() and (summary["ess_bulk"] > 100).all()


def test_grid_posterior_is_normalized_and_exact(setup):
    model, x, idx, _ = setup
    g0, g1, log_post, log_evidence = grid_log_posterior(model, x, idx, resolution=120)
    cell = (g0[:, 1] - g0[:, 0]) * (g1[:, 1] - g1[:, 0])
    assert torch.allclose((log_post.exp().sum((-1, -2)) * cell), torch.ones(3), atol=1e-6)
    assert torch.allclose(log_evidence, model.log_marginal(x).detach(), atol=1e-3)
    loc, cov = model.posterior(x)
    z = torch.stack(torch.meshgrid(g0[0], g1[0], indexing="xy"), -1)  # (G, G, 2) with [i, j] = (g0[j], g1[i])
    exact = torch.distributions.MultivariateNormal(loc[0].detach(), cov.detach()).log_prob(z)
    top = exact > exact.max() - 8  # where the density is not negligible
    assert torch.allclose(log_post[0][top], exact[top], atol=1e-3)  # grid quadrature error ~1e-4


def test_inference_data_layout_and_netcdf_roundtrip(setup, tmp_path):
    model, x, idx, nuts = setup
    guide = PerDatapointNormal({"z": 2}, 3, {"z": model.posterior(x)[0].detach()}, {"z": torch.full((3, 2), 0.3)})
    draws = {"ffg": guide_draws(model, guide, x, torch.arange(3), num_chains=2, num_draws=400), "nuts": nuts}
    idata = to_inference_data(draws, x, idx)
    path = tmp_path / "posterior.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) >= {"posterior", "sample_stats", "observed_data"}
    assert back.posterior["z_ffg"].dims == ("chain", "draw", "datapoint", "z_dim")
    assert back.posterior["z_nuts"].shape == (2, 400, 3, 2)
    assert back.posterior.coords["datapoint"].values.tolist() == [10, 20, 30]
    assert back.sample_stats["log_q_ffg"].dims == ("chain", "draw", "datapoint")
    assert "log_q_nuts" not in back.sample_stats and "log_joint_nuts" in back.sample_stats
    assert back.observed_data["x"].shape == (3, 5)
    assert torch.allclose(torch.as_tensor(back.posterior["z_ffg"].values), draws["ffg"]["latents"]["z"])


def test_khat_small_for_exact_guide_large_for_bad_guide(setup):
    model, x, idx, _ = setup
    loc, _ = model.posterior(x)
    bad = PerDatapointNormal({"z": 2}, 3, {"z": loc.detach() + 1.0}, {"z": torch.full((3, 2), 0.05)})
    draws = {"exact": guide_draws(model, model.exact_posterior_guide, x, idx, 2, 1000),
             "bad": guide_draws(model, bad, x, torch.arange(3), 2, 1000)}
    rows = diagnostics(to_inference_data(draws, x, idx))
    by = {(r["datapoint"], r["sampler"]): r for r in rows}
    exact = model.log_marginal(x).detach()
    for n, point in enumerate(idx.tolist()):
        assert by[(point, "exact")]["khat"] < 0.5
        assert by[(point, "bad")]["khat"] > 0.7
        assert by[(point, "exact")]["log_p_hat"] == pytest.approx(exact[n].item(), abs=1e-6)
        assert by[(point, "exact")]["gap"] == pytest.approx(0.0, abs=1e-6)
        assert by[(point, "bad")]["gap"] > 1.0


def test_worst_r_hat_skips_coordinates_fixed_in_every_draw_and_flags_stuck_chains():
    """An LKJ Cholesky factor has entries equal in every draw (no R-hat): they are skipped, not reported as an
    infinite R-hat; chains stuck at different values still count as infinite."""
    import arviz as az
    import numpy as np

    from ppl_vae.posterior import _worst_r_hat

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 200, 3))
    z[..., 0] = 1.0  # a fixed entry
    draws = az.convert_to_dataset({"L_nuts": z})
    with np.errstate(divide="ignore", invalid="ignore"):
        worst = _worst_r_hat(draws, az.rhat(draws))
    assert 0.99 < worst < 1.05
    z[..., 1] = np.arange(4)[:, None]  # each chain stuck at its own value
    draws = az.convert_to_dataset({"L_nuts": z})
    with np.errstate(divide="ignore", invalid="ignore"):
        assert _worst_r_hat(draws, az.rhat(draws)) > 1e6  # ArviZ: huge or infinite
