"""Masked distributions (as in Pyro's deep Markov model) in FreeBitsELBO and kl_per_dimension, β composed with free
bits, and subsampled data plates: every objective's loss stands for the N points of the data set, and the trainer
reports true nats per data point."""
import functools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from ppl_vae.diagnostics.collapse import kl_per_dimension
from ppl_vae.objectives import IWAE_ELBO, AnnealedELBO, FreeBitsELBO, linear_warmup
from ppl_vae.training import Trainer

N, D = 6, 3
MASK = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
LOC = torch.linspace(-1.5, 2.0, N * D, dtype=torch.float64).reshape(N, D)
SCALE = torch.linspace(0.3, 1.4, N * D, dtype=torch.float64).reshape(N, D)


def _masked(fn, m, how):
    """``fn`` (a Normal of batch shape ``(n, D)``) as a site distribution with event shape ``(D,)`` and mask ``m``."""
    if how == "inside":  # Normal(...).mask(m).to_event(1), as Pyro's deep Markov model
        return fn.mask(m).to_event(1)
    if how == "outside":  # a mask over whole points
        return fn.to_event(1).mask(m.all(-1))
    return fn.to_event(1)


def _pair(how):
    def model(x, idx):
        m = MASK[idx]
        with pyro.plate("data", x.shape[0]):
            fn = _masked(dist.Normal(torch.zeros(x.shape[0], D), 1.0), m, how)
            with poutine.mask(mask=m.all(-1)) if how == "poutine" else poutine.mask(mask=True):
                z = pyro.sample("z", fn)
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x, idx):
        m = MASK[idx]
        with pyro.plate("data", x.shape[0]):
            fn = _masked(dist.Normal(LOC[idx], SCALE[idx]), m, how)
            with poutine.mask(mask=m.all(-1)) if how == "poutine" else poutine.mask(mask=True):
                pyro.sample("z", fn)

    return model, guide


def _expected_kl(how):
    """The closed-form KL of every (point, dimension), zero where masked out."""
    kl = kl_divergence(dist.Normal(LOC, SCALE), dist.Normal(0.0, 1.0))
    counts = MASK if how == "inside" else MASK.all(-1, keepdim=True).expand(N, D)
    return kl * counts, counts


@pytest.mark.parametrize("how", ["inside", "outside", "poutine"])
def test_kl_per_dimension_honours_masks(how):
    model, guide = _pair(how)
    x = torch.randn(N, D)
    kl, _ = _expected_kl(how)
    torch.testing.assert_close(kl_per_dimension(model, guide, x, torch.arange(N)), kl.sum(0) / N)


@pytest.mark.parametrize("how", ["inside", "outside", "poutine"])
def test_free_bits_with_masks(how):
    """λ = 0 is TraceMeanField_ELBO's loss (Pyro's own masked KL); with a floor, each dimension pays
    max(λ, mean KL over the elements that count) per element that counts."""
    model, guide = _pair(how)
    x, idx = torch.randn(N, D), torch.arange(N)
    pyro.set_rng_seed(0)
    reference = TraceMeanField_ELBO().loss(model, guide, x, idx)
    pyro.set_rng_seed(0)
    assert FreeBitsELBO(0.0).loss(model, guide, x, idx) == pytest.approx(reference, rel=1e-12)
    lam = 0.8
    kl, counts = _expected_kl(how)
    n_d = counts.sum(0).to(kl.dtype)
    floored = (n_d * torch.where(n_d > 0, kl.sum(0) / n_d.clamp_min(1), 0.0).clamp(min=lam)).sum()
    pyro.set_rng_seed(0)
    loss, negative_elbo = FreeBitsELBO(lam).differentiable_loss_and_elbo(model, guide, x, idx)
    assert (loss - negative_elbo).item() == pytest.approx((floored - kl.sum()).item(), rel=1e-10)
    assert negative_elbo.item() == pytest.approx(reference, rel=1e-12)


def test_differently_masked_guide_and_prior_are_refused():
    def model(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], D), 1.0).mask(MASK[: x.shape[0]]).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(LOC[: x.shape[0]], SCALE[: x.shape[0]]).to_event(1))

    with pytest.raises(ValueError, match="site 'z' to be masked alike"):
        FreeBitsELBO(0.1).loss(model, guide, torch.randn(N, D))
    with pytest.raises(ValueError, match="site 'z' to be masked alike"):
        kl_per_dimension(model, guide, torch.randn(N, D))


def test_mask_false_counts_nothing():
    def model(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], D), 1.0).to_event(1).mask(False))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(LOC[: x.shape[0]], SCALE[: x.shape[0]]).to_event(1).mask(False))

    x = torch.randn(N, D)
    assert kl_per_dimension(model, guide, x).abs().max() == 0
    loss, negative_elbo = FreeBitsELBO(0.5).differentiable_loss_and_elbo(model, guide, x)
    assert loss.item() == pytest.approx(negative_elbo.item())  # no element counts: no floor is paid


def _vae_pair(subsample_of=None):
    """A linear-Gaussian pair; with ``subsample_of=N_total`` its data plate is ``plate("data", N_total,
    subsample=idx)``."""
    torch.manual_seed(3)
    w = torch.randn(D, 4)
    params = torch.nn.Module()
    params.loc = torch.nn.Parameter(torch.randn(50, D))
    scale = torch.rand(50, D) + 0.5

    def plate(x, idx):
        return pyro.plate("data", subsample_of, subsample=idx) if subsample_of else pyro.plate("data", x.shape[0])

    def model(x, idx):
        with plate(x, idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w, 1.0).to_event(1), obs=x)

    def guide(x, idx):
        with plate(x, idx):
            pyro.sample("z", dist.Normal(params.loc[idx], scale[idx]).to_event(1))

    return model, guide, params


OBJECTIVES = {
    "trace": lambda: Trace_ELBO(),
    "meanfield": lambda: TraceMeanField_ELBO(),
    "iwae": lambda: IWAE_ELBO(5),
    "free_bits": lambda: FreeBitsELBO(0.3),
    "annealed": lambda: AnnealedELBO(TraceMeanField_ELBO(), functools.partial(linear_warmup, warmup_steps=4)),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_subsampled_plate_reports_nats_per_data_point(name):
    """A batch of 10 of 50 points: the loss stands for the 50 (Pyro scales by N/B = 5), the trainer reports the same
    nats per point, and the same ELBO, as for the 10 points in an unsubsampled plate with the same draws."""
    x = torch.randn(10, 4)
    idx = torch.arange(10, 20)
    results = {}
    for kind, subsample_of in (("full", None), ("subsampled", 50)):
        model, guide, params = _vae_pair(subsample_of)
        objective = OBJECTIVES[name]()
        pyro.set_rng_seed(0)
        loss = objective.differentiable_loss(model, guide, x, idx).item()
        trainer = Trainer(model, guide, OBJECTIVES[name](), lr=1e-3, modules=[params])
        pyro.set_rng_seed(0)
        results[kind] = (loss, trainer.step(x, idx), trainer.last_elbo)
    full, sub = results["full"], results["subsampled"]
    assert sub[0] == pytest.approx(5 * full[0], rel=1e-10)  # the loss estimates the sum over the 50 points
    assert sub[1] == pytest.approx(full[1], rel=1e-10)  # nats per data point, not 5x too many
    assert sub[2] == pytest.approx(full[2], rel=1e-10)
    assert 1 < sub[1] < 100  # a loss of a few nats per point


def test_kl_per_dimension_of_a_subsampled_plate_is_per_point():
    x, idx = torch.randn(10, 4), torch.arange(10, 20)
    full = kl_per_dimension(*_vae_pair(None)[:2], x, idx)
    sub = kl_per_dimension(*_vae_pair(50)[:2], x, idx)
    torch.testing.assert_close(sub, full)


@pytest.mark.parametrize("beta", [0.0, 0.5, 3.0])
def test_beta_composes_with_free_bits(beta):
    """AnnealedELBO(FreeBitsELBO(λ), β) trains -E[log p(x|z)] + β Σ_d N max(λ, KL_d); β = 0 stays finite."""
    model, guide = _pair("inside")
    x, idx = torch.randn(N, D), torch.arange(N)
    lam = 0.8
    pyro.set_rng_seed(0)
    free_bits, negative_elbo = FreeBitsELBO(lam).differentiable_loss_and_elbo(model, guide, x, idx)
    kl, counts = _expected_kl("inside")
    n_d = counts.sum(0).to(kl.dtype)
    floored = (n_d * (kl.sum(0) / n_d).clamp(min=lam)).sum()
    neg_log_lik = free_bits.item() - floored.item()
    pyro.set_rng_seed(0)
    loss, true = AnnealedELBO(FreeBitsELBO(lam), beta).differentiable_loss_and_elbo(model, guide, x, idx)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(neg_log_lik + beta * floored.item(), rel=1e-10)
    assert true.item() == pytest.approx(negative_elbo.item(), rel=1e-10)  # the reported ELBO is the true one
