"""On a (briefly) trained VAE, the estimators fall in their expected order."""
import pytest
import torch

from ppl_vae.estimators import ais, elbo, iwae_bound, prior_mc
from ppl_vae.runs import train_run
from ppl_vae.runs.config import TrainConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    run = train_run(TrainConfig(epochs=2, z_dim=10, hidden=(100,), valid_size=500), tmp_path_factory.mktemp("r"), progress=False)
    x = run.splits().test.x[:16]
    torch.set_default_dtype(dtype)
    return run, x


def test_ordering_elbo_iwae_k_iwae_5000(trained, float32):
    run, x = trained
    torch.manual_seed(0)
    e = elbo(run.model, run.guide, x, num_samples=500).per_point  # ~ expected ELBO (sd of the mean < 0.1)
    i10 = torch.stack([iwae_bound(run.model, run.guide, x, num_samples=10).per_point for _ in range(50)]).mean(0)
    i5000 = iwae_bound(run.model, run.guide, x, num_samples=5000).per_point
    assert (e < i10).all() and (i10 < i5000 + 0.05).all()
    assert (i5000 - e).mean() > 1.0  # the bound is visibly loose for a 2-epoch encoder
    # AIS from the guide lands at or above IWAE-5000 (both estimate log p(x) from below); allow MC noise
    torch.manual_seed(0)
    a = ais(run.model, x, guide=run.guide, num_chains=8, num_steps=100, leapfrog_steps=5).per_point
    assert (a > e).all() and (a - i5000).mean() > -0.5
    # the naive prior estimate with as many samples is far worse than importance sampling from the guide
    p = prior_mc(run.model, x, num_samples=5000).per_point
    assert (i5000 - p).mean() > 5
