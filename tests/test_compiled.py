"""The fast path (:mod:`ppl_vae.compiled`): recorded graphs replay the traced path's values and gradients on every
pair of :mod:`tests.pairs`, for the per-point log weights (IWAE, ELBO, the q* fit) and for each training objective;
pairs whose Python decides on data, on changed attributes or on reads a graph cannot replay fall back to the traced
path, with the traced path's numbers.

No timings here (``benchmarks/`` measures speed). Every test records with ``record_after=1`` so that the second call
of a signature already replays.
"""
import functools
import types

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from ppl_vae.compiled import MAX_GUARD_FAILURES, CompiledFunction, compilation, pair_state, pair_tensors
from ppl_vae.conventions import max_plate_nesting
from ppl_vae.estimators.log_weights import compiled_log_weights, log_weights, traced_log_weights
from ppl_vae.objectives import AnnealedELBO
from ppl_vae.objectives.base import loss_and_elbo
from ppl_vae.training import Trainer
from ppl_vae.training.tensor_losses import tensor_loss_and_elbo

from .pairs import PAIRS
from .test_any_pair import OBJECTIVES

NAMES = sorted(PAIRS)
RTOL, ATOL = 1.3e-6, 1e-5  # float32 tolerance (torch.testing's default for float32)


def _pair(name):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    return PAIRS[name]()


def _close(a, b, what):
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


def _grads(value, params):
    grads = torch.autograd.grad(value.sum(), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@pytest.mark.parametrize("name", NAMES)
def test_log_weights_fast_path_equals_the_traced_path(name, float32):
    p = _pair(name)
    nesting = max_plate_nesting(p.model, p.guide, p.x, p.idx)
    params = [t for t in pair_tensors(p.model, p.guide) if t.requires_grad]
    with compilation(record_after=1):
        for seed in range(3):  # call 1 records (and returns the traced value), calls 2 and 3 replay
            torch.manual_seed(seed)
            fast = log_weights(p.model, p.guide, p.x, p.idx, 4, nesting=nesting)
            after_fast = torch.get_rng_state()
            torch.manual_seed(seed)
            ref = traced_log_weights(p.model, p.guide, p.x, p.idx, 4, nesting=nesting)
            assert torch.equal(after_fast, torch.get_rng_state()), "the replay draws what the traced path draws"
            _close(fast, ref, f"{name} log weights, call {seed + 1}")
            for g, h in zip(_grads(fast, params), _grads(ref, params)):
                _close(g, h, f"{name} gradient, call {seed + 1}")
    stats = compiled_log_weights(p.model, p.guide).stats
    assert stats["recorded"] == 1 and stats["replays"] == 2, stats  # the fast path ran, and was not refused


@pytest.mark.parametrize("name", NAMES)
def test_training_fast_path_equals_the_traced_path(name, float32):
    for objective in PAIRS[name]().objectives:
        runs = {}
        for enabled in (True, False):
            p = _pair(name)
            modules = [m for m in (p.notes.get("module"),) if m is not None]
            trainer = Trainer(p.model, p.guide, OBJECTIVES[objective](), lr=1e-2, modules=modules)
            with compilation(enabled=enabled, record_after=1):
                losses = [trainer.step(p.x, p.idx) for _ in range(3)]
            runs[enabled] = losses, [q.detach().clone() for q in trainer.optimizer.param_groups[0]["params"]]
            if enabled:
                assert trainer._compiled is not None
                assert trainer._compiled.stats["replays"] == 2, (objective, trainer._compiled.stats)
        _close(torch.tensor(runs[True][0]), torch.tensor(runs[False][0]), f"{name} {objective} losses")
        for a, b in zip(runs[True][1], runs[False][1]):
            _close(a, b, f"{name} {objective} parameters after 3 steps")


@pytest.mark.parametrize("name", ["two_level", "enumerated_mixture", "pyro_vae", "bernoulli_latent"])
def test_tensor_losses_equal_pyros_objectives(name):
    """The objectives' tensor losses (what the trainer records) give Pyro's loss and gradient, bit for bit."""
    for objective in PAIRS[name]().objectives:
        p = _pair(name)
        objective_ = OBJECTIVES[objective]()
        loss_and_elbo(objective_, p.model, p.guide, p.x, p.idx)  # Pyro guesses max_plate_nesting on a first call
        params = [t for t in pair_tensors(p.model, p.guide, *p.notes.values()) if t.requires_grad]
        out = []
        for fn in (tensor_loss_and_elbo(objective_), loss_and_elbo):
            torch.manual_seed(1)
            loss, negative_elbo = fn(objective_, p.model, p.guide, p.x, p.idx)
            out.append((loss.detach(), negative_elbo, _grads(loss, params)))
        (a, ea, ga), (b, eb, gb) = out
        assert torch.equal(a, b) and torch.equal(ea, eb), (objective, a, b)
        assert all(torch.equal(u, v) for u, v in zip(ga, gb)), objective


def test_objectives_that_keep_state_train_on_the_traced_path():
    p = _pair("two_level")
    trainer = Trainer(p.model, p.guide, AnnealedELBO(pyro.infer.Trace_ELBO(), lambda step: min(1.0, step / 10)), lr=1e-2)
    trainer.step(p.x, p.idx)
    assert trainer._compiled is None  # its β moves every step: no tensor loss, never recorded


# ---- pairs the graphs must not replay ----------------------------------------------------------------------------
class DataDependentLikelihood(nn.Module):
    """A likelihood whose distribution type depends on the data: Normal for a batch with a positive mean, Laplace
    otherwise (the branch reads ``x``)."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Linear(2, 3)

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            family = dist.Normal if bool(x.mean() > 0) else dist.Laplace
            pyro.sample("x", family(self.loc(z), 1.0).to_event(1), obs=x)


class SampleDependentSites(nn.Module):
    """An extra observed site only for draws whose first coordinate is positive (the branch reads a sampled value)."""

    def forward(self, x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)
            if bool(z[..., 0].mean() > 0):
                pyro.sample("x_extra", dist.Normal(z[..., 1:], 2.0).to_event(1), obs=x)


class Guide(nn.Module):
    def __init__(self, x_dim):
        super().__init__()
        self.net = nn.Linear(x_dim, 4)

    def forward(self, x, idx=None):
        loc, log_scale = self.net(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def _compare_calls(model, guide, xs, num_samples=3):
    """log weights on the fast path and on the traced path from the same random state, call after call."""
    with compilation(record_after=1):
        for seed, x in enumerate(xs):
            torch.manual_seed(seed)
            fast = log_weights(model, guide, x, None, num_samples, nesting=1)
            torch.manual_seed(seed)
            ref = traced_log_weights(model, guide, x, None, num_samples, nesting=1)
            _close(fast, ref, f"call {seed + 1}")
    return compiled_log_weights(model, guide)


def test_data_dependent_control_flow_falls_back_to_the_traced_path():
    model, guide = DataDependentLikelihood(), Guide(3)
    positive = torch.rand(4, 3) + 0.1
    negative = -positive
    # recorded on a positive batch (Normal); a negative batch of the same shape takes the Laplace branch: the guard on
    # ``bool(x.mean() > 0)`` fails, the traced path runs (the compared values are the Laplace ones)
    compiled = _compare_calls(model, guide, [positive, positive, negative])
    assert compiled.stats["recorded"] == 1 and compiled.stats["replays"] == 1
    assert compiled.stats["guard_failures"] == 1
    # a graph whose guards keep failing is dropped: that signature runs traced from then on
    compiled = _compare_calls(model, guide, [negative] * (MAX_GUARD_FAILURES + 2))
    assert any("guards failed" in reason for reason in compiled.refusals.values()), compiled.refusals
    traced_before = compiled.stats["traced"]
    _compare_calls(model, guide, [positive])
    assert compiled.stats["traced"] == traced_before + 1


def test_branches_on_sampled_values_replay_only_when_the_draws_agree():
    model, guide = SampleDependentSites(), Guide(1)
    x = torch.randn(3, 1)
    compiled = _compare_calls(model, guide, [x] * 8, num_samples=1)  # every call equals the traced path
    assert compiled.stats["guard_failures"] >= 1, compiled.stats  # some draws took the other branch


class Switchable(nn.Module):
    """A model with a Python attribute that picks its likelihood, and a decoder that can be swapped."""

    def __init__(self):
        super().__init__()
        self.likelihood = "normal"
        self.decoder = nn.Sequential(nn.Linear(2, 3), nn.ELU())

    def forward(self, x, idx=None):
        family = dist.Normal if self.likelihood == "normal" else dist.StudentT
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            loc = self.decoder(z)
            fn = family(loc, 1.0) if family is dist.Normal else family(3.0, loc, 1.0)
            pyro.sample("x", fn.to_event(1), obs=x)


def test_changed_python_state_records_a_new_graph():
    model, guide, x = Switchable(), Guide(3), torch.randn(4, 3)
    compiled = _compare_calls(model, guide, [x, x])
    key = pair_state(model, guide)
    model.likelihood = "student"  # the site's distribution type changes without any tensor changing
    assert pair_state(model, guide) != key
    _compare_calls(model, guide, [x, x])
    model.decoder[1] = nn.Tanh()  # a replaced submodule: same parameters, other operations
    _compare_calls(model, guide, [x, x])
    model.decoder[1].training = False
    _compare_calls(model, guide, [x])
    assert compiled.stats["recorded"] == 4 and compiled.stats["guard_failures"] == 0, compiled.stats


def test_unreplayable_reads_and_hidden_parameters_run_traced():
    hidden = nn.Parameter(torch.ones(2))  # read by the model, neither a module's parameter nor a pyro.param

    def model(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(hidden, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def listed(x, idx=None):
        scale = float(sum(x.flatten().tolist()) ** 2 + 1)  # a read a graph cannot see
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), scale).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    guide, x = Guide(1), torch.randn(3, 1)
    for fn, reason in ((model, "requires a gradient"), (listed, "Tensor.tolist")):
        compiled = _compare_calls(fn, guide, [x, x, 2 * x])
        assert compiled.stats["replays"] == 0 and compiled.stats["recorded"] == 0
        assert any(reason in r for r in compiled.refusals.values()), compiled.refusals
    with compilation(record_after=1):
        log_weights(model, guide, x, None, 2, nesting=1).sum().backward()
    assert hidden.grad is not None and bool(hidden.grad.abs().sum() > 0)


def test_under_a_pyro_handler_the_traced_path_runs():
    p = _pair("two_level")
    nesting = max_plate_nesting(p.model, p.guide, p.x, p.idx)
    with compilation(record_after=1):
        plain = [log_weights(p.model, p.guide, p.x, p.idx, 4, nesting=nesting) for _ in range(2)]
        compiled = compiled_log_weights(p.model, p.guide)
        assert compiled.stats["replays"] == 1
        with poutine.mask(mask=False):  # a handler the graph knows nothing of: it must run traced
            masked = log_weights(p.model, p.guide, p.x, p.idx, 4, nesting=nesting)
        again = log_weights(p.model, p.guide, p.x, p.idx, 4, nesting=nesting)
    assert compiled.stats["replays"] == 2 and plain[0].shape == masked.shape
    assert torch.equal(masked, torch.zeros_like(masked))  # every density masked out, as the traced path gives
    assert bool((again != 0).all())


def test_compiled_function_checks_its_recording():
    calls = []

    def impure(x):
        calls.append(1)
        return x * len(calls)  # a Python counter: the replay of call 1's graph would return x * 1

    f = CompiledFunction(impure, name="impure")
    with compilation(record_after=1):
        values = [f(torch.ones(2))[0].item() for _ in range(3)]
    assert "differ" in next(iter(f.refusals.values()))  # the validating replay disagreed: never used
    assert values == [1.0, 3.0, 4.0]  # the recording's own build and check call the function too; all traced
    with pytest.raises(ValueError, match="Expected record_after >= 1"):
        with compilation(record_after=0):
            pass


def test_graphs_call_torchs_bindings_where_they_agree():
    p = _pair("two_level")
    nesting = max_plate_nesting(p.model, p.guide, p.x, p.idx)
    with compilation(record_after=1):
        for _ in range(2):
            log_weights(p.model, p.guide, p.x, p.idx, 4, nesting=nesting)
    graph = next(g for g in compiled_log_weights(p.model, p.guide)._graphs.values() if g is not None)
    code = graph.module.code
    assert "torch._C._nn.linear(" in code  # aten.linear.default, called through its binding
    assert "torch.ops.aten.broadcast_tensors" in code  # torch.broadcast_tensors is another function: kept


_TUTORIAL_DECODER = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 3))  # read by its global name
_SETTINGS = types.SimpleNamespace(prior_scale=1.0)  # a configuration object read by its global name


def _tutorial_model(x, idx=None):
    """Pyro's tutorial style: a plain function that registers a module it reads as a global."""
    pyro.module("decoder", _TUTORIAL_DECODER)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), _SETTINGS.prior_scale).to_event(1))
        pyro.sample("x", dist.Normal(_TUTORIAL_DECODER(z), 0.5).to_event(1), obs=x)


def test_state_read_through_globals_closures_and_partials_records_new_graphs(float32):
    """Found by a tester: a module's training flag, a replaced submodule or a configuration attribute reached through
    a function's globals, closure or ``functools.partial`` replayed a stale graph (7-69 nats off per point)."""
    pyro.clear_param_store()
    guide, x = Guide(3), torch.randn(4, 3)
    _TUTORIAL_DECODER.eval()
    compiled = _compare_calls(_tutorial_model, guide, [x, x])
    _TUTORIAL_DECODER.train()  # dropout on
    _compare_calls(_tutorial_model, guide, [x, x])
    _SETTINGS.prior_scale = 2.0
    _compare_calls(_tutorial_model, guide, [x, x])
    _TUTORIAL_DECODER[1] = nn.Identity()
    _compare_calls(_tutorial_model, guide, [x, x])
    assert compiled.stats["recorded"] == 4, compiled.stats
    decoder, settings = nn.Linear(2, 3), {"scale": 1.0}

    def closure_model(x, idx=None, settings=settings):
        pyro.module("closure_decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), settings["scale"]).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 0.5).to_event(1), obs=x)

    model = functools.partial(closure_model, settings=settings)
    first = pair_state(model, guide)
    settings["scale"] = 3.0
    assert pair_state(model, guide) != first
    assert any(t is decoder.weight for t in pair_tensors(model, guide))  # its tensors are the graph's inputs


class _NormalizedGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))

    def forward(self, x, idx=None):
        loc, log_scale = self.net(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def test_recording_changes_buffers_once_as_the_traced_path_does(float32):
    """A BatchNorm in training mode updates its running statistics on every call; recording runs the pair several
    times, and each run's update is put back, so 30 calls leave the statistics of 30 traced calls."""
    model = Switchable()
    runs = {}
    for enabled in (True, False):
        torch.manual_seed(0)
        guide = _NormalizedGuide()
        xs = [torch.randn(6, 3) for _ in range(30)]
        with compilation(enabled=enabled, record_after=20), torch.no_grad():
            values = torch.stack([log_weights(model, guide, x, None, 2, nesting=1) for x in xs])
        bn = guide.net[1]
        if enabled:
            assert compiled_log_weights(model, guide).stats["replays"] == 10
        runs[enabled] = (values, bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    for a, b in zip(runs[True], runs[False]):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    assert runs[True][3] == 30
