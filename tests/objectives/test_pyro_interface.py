"""The objectives are Pyro ELBOs: pyro.infer.SVI, the ELBOModule route (elbo(model, guide), as with PyTorch Lightning)
and our Trainer take the same steps on the same batches."""
import copy
import functools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.infer.elbo import ELBOModule
from torch import nn

from ppl_vae.objectives import IWAE_ELBO, AnnealedELBO, FreeBitsELBO, linear_warmup
from ppl_vae.training import Trainer

OBJECTIVES = {
    "iwae": lambda: IWAE_ELBO(4),
    "free_bits": lambda: FreeBitsELBO(0.2, num_particles=2),
    "annealed": lambda: AnnealedELBO(TraceMeanField_ELBO(), functools.partial(linear_warmup, warmup_steps=4)),
    "annealed_free_bits": lambda: AnnealedELBO(FreeBitsELBO(0.2), 3.0),
}


class Model(nn.Module):
    """Linear-Gaussian decoder, registered with ``pyro.module`` so that ``SVI`` (which optimizes ``pyro.param`` s)
    trains it too."""

    def __init__(self):
        super().__init__()
        self.decoder = nn.Linear(2, 5)

    def forward(self, x, idx=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)


class Guide(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(5, 4)

    def forward(self, x, idx=None):
        pyro.module("encoder", self.encoder)
        out = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(out[:, :2], nn.functional.softplus(out[:, 2:]) + 1e-3).to_event(1))


def _flat(*modules):
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


def _train(route, make, model0, guide0, batches):
    pyro.clear_param_store()
    model, guide, objective = copy.deepcopy(model0), copy.deepcopy(guide0), make()
    pyro.set_rng_seed(1)
    if route == "trainer":
        trainer = Trainer(model, guide, objective, lr=1e-2)
        for x in batches:
            trainer.step(x)
    elif route == "svi":
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), objective)
        for x in batches:
            assert isinstance(svi.step(x), float)
    else:
        module = objective(model, guide)
        assert isinstance(module, ELBOModule)
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
        for x in batches:
            optimizer.zero_grad()
            (module(x) / x.shape[0]).backward()
            optimizer.step()
    return _flat(model, guide), objective


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_svi_elbo_module_and_trainer_take_the_same_steps(name):
    make = OBJECTIVES[name]
    assert isinstance(make(), pyro.infer.ELBO)
    torch.manual_seed(0)
    model0, guide0 = Model(), Guide()
    batches = [torch.randn(8, 5) for _ in range(5)]
    start = _flat(model0, guide0)
    ours, objective = _train("trainer", make, model0, guide0, batches)
    svi, svi_objective = _train("svi", make, model0, guide0, batches)
    module, module_objective = _train("module", make, model0, guide0, batches)
    assert (ours - start).abs().max() > 1e-2  # the five steps moved the parameters
    # the trainer's fused Adam on the per-point loss against Pyro's Adam on the batch sum: equal up to Adam's eps
    torch.testing.assert_close(svi, ours, rtol=0, atol=1e-7)
    torch.testing.assert_close(module, ours, rtol=0, atol=1e-7)
    if isinstance(objective, AnnealedELBO):  # the schedule advanced once per step on every route
        assert objective.step == svi_objective.step == module_objective.step == len(batches)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_loss_is_a_float_and_differentiable_loss_a_scalar(name):
    objective = OBJECTIVES[name]()
    x = torch.randn(6, 5)
    model, guide = Model(), Guide()
    assert isinstance(objective.loss(model, guide, x), float)
    loss = objective.differentiable_loss(model, guide, x)
    assert loss.shape == () and loss.requires_grad
