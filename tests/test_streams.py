"""Per-point random streams: a point's draws do not depend on the batch it is drawn in."""
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from ppl_vae.guides import AmortizedNormal, PerDatapointFlow, PerDatapointMVN, PerDatapointNormal
from ppl_vae.latent_space import LatentSpace
from ppl_vae.streams import PerPointSampling, PointStreams, point_seed
from ppl_vae.traces import vectorize_particles

from .pairs import PAIRS


def _latents(fn, x, idx, seed=7, purpose="test"):
    streams = PointStreams(seed, idx, purpose)
    trace = poutine.trace(PerPointSampling(streams)(vectorize_particles(fn, 3, -2))).get_trace(x, idx)
    return {k: v["value"] for k, v in trace.nodes.items()
            if v["type"] == "sample" and not v["is_observed"] and k not in ("data", "_ppl_vae_particles")}


@pytest.mark.parametrize("name", ["linear_gaussian", "gamma_scale", "dirichlet_counts", "two_level"])
def test_a_points_draws_are_the_same_alone_and_in_a_batch(name):
    p = PAIRS[name]()
    space = LatentSpace(p.model, p.x, p.idx)
    guides = [p.guide, PerDatapointNormal(space, p.idx), PerDatapointMVN(space, p.idx), PerDatapointFlow(space, p.idx)]
    for guide in [*guides, p.model]:  # the model: its prior
        full, alone = _latents(guide, p.x, p.idx), _latents(guide, p.x[2:3], p.idx[2:3])
        for site in alone:
            # equal up to the rounding of batched arithmetic (the encoder on 6 points or 1)
            assert torch.allclose(full[site][:, 2:3], alone[site], rtol=0, atol=1e-12), (type(guide).__name__, site)


def test_families_without_a_normal_reparameterization_are_drawn_point_by_point():
    def model(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Gamma(2.0, 1.0))
            pyro.sample("c", dist.Beta(2.0, 3.0).expand([x.shape[0], 2]).to_event(1))
            pyro.sample("d", dist.Bernoulli(0.3).expand([x.shape[0], 2]).to_event(1))
            pyro.sample("e", dist.Categorical(logits=torch.zeros(4)))
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    x, idx = torch.randn(5), torch.arange(10, 15)
    full, alone = _latents(model, x, idx), _latents(model, x[3:4], idx[3:4])
    assert all(torch.equal(full[k][:, 3:4], alone[k]) for k in ("a", "c", "d", "e"))


def test_streams_differ_by_seed_point_and_purpose_and_keep_gradients():
    assert len({point_seed(0, 1, "a"), point_seed(1, 1, "a"), point_seed(0, 2, "a"), point_seed(0, 1, "b")}) == 4
    p = PAIRS["linear_gaussian"]()
    a, b = _latents(p.guide, p.x, p.idx, seed=1), _latents(p.guide, p.x, p.idx, seed=2)
    assert not torch.equal(a["z"], b["z"])
    assert _latents(p.guide, p.x, p.idx)["z"].requires_grad  # reparameterized: gradients reach the encoder
    guide = AmortizedNormal.for_model(p.model, p.x, hidden=(4,))
    _latents(guide, p.x, p.idx)["z"].sum().backward()
    assert all(q.grad is not None for q in guide.parameters())


def test_point_masses_are_left_alone_and_take_no_random_numbers(monkeypatch):
    """A latent-space guide writes each model site as a ``Delta`` of its flat draw: drawing it point by point (a fork
    of the global generator per point) cost a seeded q* fit half its time."""
    def guide(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 2]).to_event(1))
            pyro.sample("w", dist.Delta(2 * z, event_dim=1))
            pyro.sample("v", dist.Delta(z[..., 0]).mask(True))

    def forked(*args):
        raise AssertionError("a point mass was drawn point by point")

    monkeypatch.setattr(PerPointSampling, "_point_by_point", forked)
    x, idx = torch.zeros(4, 1), torch.arange(4)
    streams = PointStreams(3, idx, "test")
    trace = poutine.trace(PerPointSampling(streams)(guide)).get_trace(x, idx)
    z = trace.nodes["z"]["value"]
    assert torch.equal(trace.nodes["w"]["value"], 2 * z) and torch.equal(trace.nodes["v"]["value"], z[..., 0])
    again = PointStreams(3, idx, "test")
    assert torch.equal(again.normal((2,)), z)  # z took one draw of each stream, and w and v none
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(streams.generators, again.generators))
