"""Per-point flows (:class:`ppl_vae.guides.PerDatapointFlow`): they start at the per-point Gaussian they are given
(the identity), invert exactly, and their log-density is the change of variables of the autograd Jacobian."""
import pyro.distributions as dist
import pytest
import torch
from torch.autograd.functional import jacobian

from ppl_vae.guides import PerDatapointFlow, PerDatapointNormal, default_local_flow

N = 4


def _perturbed(flow, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc, scale = torch.randn(N, d, generator=g), torch.rand(N, d, generator=g) + 0.3
    guide = PerDatapointFlow({"z": d}, N, loc, scale, flow=flow, num_flows=3)
    with torch.no_grad():
        for p in guide.transforms.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return guide


@pytest.mark.parametrize("flow,d", [("coupling", 2), ("coupling", 5), ("spline", 1), ("spline", 3)])
def test_invertible_flows_start_at_the_gaussian(flow, d):
    loc, scale = torch.randn(N, d), torch.rand(N, d) + 0.3
    x, idx = torch.zeros(N, 3), torch.arange(N)
    guide = PerDatapointFlow({"z": d}, N, loc, scale, flow=flow)
    ffg = PerDatapointNormal({"z": d}, N, loc, scale)
    u = loc + 1.5 * scale * torch.randn(7, N, d)  # also outside the samples the guide drew itself
    q, r = guide.latent_distribution(x, idx), ffg.latent_distribution(x, idx)
    # coupling layers are exactly the identity at the start; Pyro's splines fix their end derivatives at 0.999
    tol = 1e-10 if flow == "coupling" else 2e-3
    assert torch.allclose(q.log_prob(u), r.log_prob(u), atol=tol)
    eps = torch.randn(N, d)
    assert torch.allclose(_forward(q, eps), loc + scale * eps, atol=tol)


def _forward(q, eps):
    for t in q.transforms:
        eps = t(eps)
    return eps


@pytest.mark.parametrize("flow,d", [("coupling", 2), ("coupling", 5), ("spline", 1), ("spline", 3)])
def test_inverse_and_log_det_against_autograd(flow, d):
    guide = _perturbed(flow, d)
    q = guide.latent_distribution(torch.zeros(N, 3), torch.arange(N))
    eps = torch.randn(N, d)
    y = _forward(q, eps)
    back = y
    for t in reversed(q.transforms):
        back = t.inv(back)
    assert torch.allclose(back, eps, atol=1e-8)
    # log q(y_n) = log N(eps_n) - log|det d y_n / d eps_n|, the Jacobian of each point's own map by autograd
    log_det = []
    for n in range(N):
        def f(v, n=n):
            e = eps.clone()
            e[n] = v
            return _forward(q, e)[n]
        log_det.append(torch.linalg.slogdet(jacobian(f, eps[n]))[1])
    expected = dist.Normal(0.0, 1.0).log_prob(eps).sum(-1) - torch.stack(log_det)
    assert torch.allclose(q.log_prob(y.detach()), expected, atol=1e-8)


def test_points_have_their_own_flows():
    guide = _perturbed("coupling", 3)
    x, idx, u = torch.zeros(N, 3), torch.arange(N), torch.randn(N, 3)
    before = guide.latent_distribution(x, idx).log_prob(u)
    one = guide.latent_distribution(x[:1], torch.tensor([2]))  # a point alone: the same density as in the batch
    assert torch.allclose(one.log_prob(u[2:3]), before[2:3], atol=1e-10)
    with torch.no_grad():  # changing point 2's tables changes point 2's density only
        for p in guide.transforms.parameters():
            p[2].add_(0.5)
    after = guide.latent_distribution(x, idx).log_prob(u)
    assert torch.equal(after[[0, 1, 3]], before[[0, 1, 3]]) and not torch.allclose(after[2], before[2])


def test_default_kind_and_refusals():
    assert default_local_flow(1) == "spline" and default_local_flow(2) == default_local_flow(50) == "coupling"
    assert PerDatapointFlow({"z": 3}, N).flow == "coupling" and PerDatapointFlow({"z": 1}, N).flow == "spline"
    with pytest.raises(ValueError, match="Expected a latent dimension >= 2 for an affine coupling layer"):
        PerDatapointFlow({"z": 1}, N, flow="coupling")
    with pytest.raises(ValueError, match="Expected num_flows >= 1, got 0"):
        PerDatapointFlow({"z": 2}, N, num_flows=0)
    with pytest.raises(ValueError, match="Expected count_bins >= 2 for a spline, got 1"):
        PerDatapointFlow({"z": 2}, N, flow="spline", count_bins=1)
    with pytest.raises(ValueError, match="Unknown per-datapoint flow 'iaf'"):
        PerDatapointFlow({"z": 2}, N, flow="iaf")


def test_coupling_flows_stay_exact_with_extreme_conditioner_weights(float32):
    """Found on a 50-D VAE: after thousands of q* steps Pyro's gradient-passing clip had let the raw log-scales run
    away, float32 rounding in the clip broke the layers' inverses, and L[q*_Flow] came out at +1e13 nats. With the
    bounded shift and log-scale, a flow with absurd weights (std 50) still inverts and scores its samples exactly."""
    from ppl_vae.guides.point_coupling import LOG_SCALE_BOUND, SHIFT_BOUND

    d, g = 50, torch.Generator().manual_seed(0)
    guide = PerDatapointFlow({"z": d}, N, torch.zeros(N, d), torch.ones(N, d), flow="coupling", num_flows=4)
    with torch.no_grad():
        for p in guide.transforms.parameters():
            p.copy_(50 * torch.randn(p.shape, generator=g))
    net = guide.transforms[0].nn
    shift, log_scale = net(1e4 * torch.randn(3, N, d // 2, generator=g), torch.arange(N))
    assert shift.abs().max() <= SHIFT_BOUND and log_scale.abs().max() <= LOG_SCALE_BOUND
    q = guide.latent_distribution(torch.zeros(N, 3), torch.arange(N))
    eps = torch.randn(N, d, generator=g)
    y = _forward(q, eps)
    back = y.clone()
    for t in reversed(q.transforms):
        back = t.inv(back)
    assert torch.allclose(back, eps, atol=1e-3)
    cached, fresh = q.log_prob(y), q.log_prob(y.clone())  # the density of its own sample, and of a foreign point
    assert torch.allclose(cached, fresh, rtol=1e-4, atol=1e-2)
    assert (cached < dist.Normal(0.0, 1.0).log_prob(eps).sum(-1) + 4 * LOG_SCALE_BOUND * d).all()  # bounded log-det
