"""One parametrized test over every guide: sites match the model, shapes, gradients reach every parameter,
save/load round trip."""
import pyro
import pytest
import torch

from ppl_vae.conventions import check_pair
from ppl_vae.estimators import log_weights
from ppl_vae.guides import FLOWS, LOCAL_FLOWS, AmortizedFlow, AmortizedNormal, PerDatapointFlow, PerDatapointMVN, PerDatapointNormal
from ppl_vae.models import BernoulliVAE

N, Z = 6, 3


def _make(name):
    model = BernoulliVAE(x_dim=784, z_dim=Z, hidden=(16,))
    x = torch.bernoulli(torch.full((N, 784), 0.3))
    if name == "amortized":
        return model, AmortizedNormal.for_model(model, x, hidden=(16,)), x
    if name.startswith("flow-"):
        kind = name.split("-", 1)[1]
        return model, AmortizedFlow.for_model(model, x, hidden=(16,), flow=kind, num_flows=2, context_dim=4,
                                              flow_hidden=(8,)), x
    cls = {"ffg": PerDatapointNormal, "mvn": PerDatapointMVN}.get(name)
    if cls is not None:
        return model, cls({"z": Z}, N), x
    kind = name.split("-", 1)[1]
    guide = PerDatapointFlow({"z": Z}, N, num_flows=2, flow=kind)
    if kind == "coupling":  # at the identity (output layers at zero) no gradient reaches the hidden layers yet
        with torch.no_grad():
            for t in guide.transforms:
                t.nn.w2.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    return model, guide, x


GUIDES = ["amortized", *[f"flow-{k}" for k in sorted(FLOWS)], "ffg", "mvn", *[f"local-{k}" for k in sorted(LOCAL_FLOWS)]]


@pytest.mark.parametrize("name", GUIDES)
def test_guide_contract(name, tmp_path):
    model, guide, x = _make(name)
    idx = torch.arange(N)
    sites = check_pair(model, guide, x, idx)
    assert list(sites) == ["z"]
    # shapes under a particle plate: (S, N)
    lw = log_weights(model, guide, x, idx, num_samples=4)
    assert lw.shape == (4, N) and torch.isfinite(lw).all()
    # gradients of the ELBO reach every parameter of the guide
    (-lw.mean()).backward()
    for pname, p in guide.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"
    # save / load gives the same guide
    torch.save(guide.state_dict(), tmp_path / "g.pt")
    _, other, _ = _make(name)
    other.load_state_dict(torch.load(tmp_path / "g.pt"))
    values = []
    for g in (guide, other):
        pyro.set_rng_seed(7)
        values.append(log_weights(model, g, x, idx, num_samples=3).detach())
    assert torch.equal(values[0], values[1])


def test_per_datapoint_guide_index_errors():
    guide = PerDatapointNormal({"z": 2}, 5)
    with pytest.raises(ValueError, match=r"idx out of range: .* 5 points, got idx \[7\]"):
        guide(torch.zeros(2, 4), torch.tensor([0, 7]))
    keyed = PerDatapointNormal({"z": 2}, torch.tensor([40, 10, 30]))  # rows looked up by the points' own indices
    assert torch.equal(keyed.points(torch.tensor([30, 40])), torch.tensor([2, 0]))
    with pytest.raises(ValueError, match=r"got idx \[20\] that are not among them"):
        keyed(torch.zeros(1, 4), torch.tensor([20]))
    with pytest.raises(ValueError, match="Expected distinct point indices"):
        PerDatapointNormal({"z": 2}, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="Unknown per-datapoint flow"):
        PerDatapointFlow({"z": 2}, 5, flow="iaf")
