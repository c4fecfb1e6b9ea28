"""How to take Pyro's tracing out of the hot path: the routes measured on the Cremer et al. VAE, one process.

For a training step (``Trace_ELBO`` loss and its backward pass, batch 100) and for one IWAE pass (the per-point log
weights of one point with 2,048 samples, no gradient), prints the first call (recording or compilation included)
and the median of later calls for:

- ``traced``: Pyro's handlers every call (the reference);
- ``recorded graph``: :class:`ppl_vae.compiled.CompiledFunction`, the pre-dispatch graph of ``make_fx`` (the tracer
  behind ``torch.func`` and ``torch.export``) replayed — what the library uses;
- ``torch.compile``: of the traced function, with the backend given (Dynamo breaks Pyro's handler stack into several
  graphs; their number is printed);
- ``JitTrace_ELBO``: Pyro's own JIT route (``torch.jit.trace``), training step only; the modules are registered
  with ``pyro.module`` as it requires;
- ``hand-written``: the same computation written directly in PyTorch (the floor).

    python benchmarks/capture_choice.py [--calls 20] [--backend inductor|aot_eager]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import pyro
import torch
from torch import nn

from ppl_vae.compiled import CompiledFunction, compilation, pair_state, pair_tensors
from ppl_vae.estimators.log_weights import traced_log_weights
from ppl_vae.guides import AmortizedNormal
from ppl_vae.models import BernoulliVAE
from ppl_vae.training.tensor_losses import trace_elbo_loss


def timed(fn, calls: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of the next ``calls``)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def hand_loss(model, guide, x):
    q = guide.distributions(x)["z"].base_dist
    z = q.loc + q.scale * torch.randn_like(q.loc)
    log_px = -nn.functional.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum(-1)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    return -(log_px + log_pz - q.log_prob(z).sum(-1)).sum()


def hand_log_weights(model, guide, x, k):
    q = guide.distributions(x)["z"].base_dist
    z = q.loc + q.scale * torch.randn(k, *q.loc.shape)
    logits = model.decoder(z)
    log_px = -nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    return log_px + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)


def graph_breaks(fn, *args) -> int | str:
    try:
        return torch._dynamo.explain(fn)(*args).graph_break_count
    except Exception as e:  # noqa: BLE001 - a measurement, not a result
        return f"n/a ({type(e).__name__})"


def main(args):
    pyro.enable_validation(False)
    torch.distributions.Distribution.set_default_validate_args(False)
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    model, guide = BernoulliVAE(), AmortizedNormal(784, {"z": 50})
    params = list(model.parameters()) + list(guide.parameters())
    x = torch.rand(100, 784).round()
    elbo = pyro.infer.Trace_ELBO()

    def step(loss_fn):
        def run():
            for p in params:
                p.grad = None
            loss_fn().backward()
        return run

    traced = lambda: trace_elbo_loss(elbo, model, guide, x, None)  # noqa: E731
    recorded = CompiledFunction(lambda x: trace_elbo_loss(elbo, model, guide, x, None),
                                lambda: pair_tensors(model, guide), state=lambda: pair_state(model, guide, elbo))
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows["train", "traced"] = timed(step(traced), args.calls)
        with compilation(record_after=1):
            rows["train", "recorded graph"] = timed(step(lambda: recorded(x)), args.calls)
        compiled = torch.compile(traced, backend=args.backend)
        rows["train", f"torch.compile ({args.backend})"] = timed(step(compiled), args.calls)
        breaks_train = graph_breaks(traced)

        def jit_model(x, idx=None):
            pyro.module("decoder", model.decoder)
            return model(x, idx)

        def jit_guide(x, idx=None):
            pyro.module("encoder", guide)
            return guide(x, idx)

        jit = pyro.infer.JitTrace_ELBO()
        try:
            rows["train", "JitTrace_ELBO"] = timed(step(lambda: jit.differentiable_loss(jit_model, jit_guide, x)),
                                                   args.calls)
        except Exception as e:  # noqa: BLE001 - a measurement, not a result
            print(f"JitTrace_ELBO failed: {type(e).__name__}: {str(e).splitlines()[0]}")
        rows["train", "hand-written"] = timed(step(lambda: hand_loss(model, guide, x)), args.calls)

        x1 = x[:1]
        with torch.no_grad():
            lw = lambda: traced_log_weights(model, guide, x1, None, args.k, nesting=1)  # noqa: E731
            rec_lw = CompiledFunction(lambda x: traced_log_weights(model, guide, x, None, args.k, nesting=1),
                                      lambda: pair_tensors(model, guide), state=lambda: pair_state(model, guide))
            rows["iwae", "traced"] = timed(lw, args.calls)
            with compilation(record_after=1):
                rows["iwae", "recorded graph"] = timed(lambda: rec_lw(x1), args.calls)
            compiled_lw = torch.compile(lw, backend=args.backend)
            rows["iwae", f"torch.compile ({args.backend})"] = timed(compiled_lw, args.calls)
            breaks_iwae = graph_breaks(lw)
            rows["iwae", "hand-written"] = timed(lambda: hand_log_weights(model, guide, x1, args.k), args.calls)
    print(f"\n{'path':<7}{'route':<28}{'first call s':>13}{'later calls ms':>16}{'/ hand-written':>16}")
    for (path, route), (first, later) in rows.items():
        hand = rows[path, "hand-written"][1]
        print(f"{path:<7}{route:<28}{first:>13.3f}{1000 * later:>16.2f}{later / hand:>16.3f}")
    print(f"torch.compile graph breaks: training step {breaks_train}, IWAE pass {breaks_iwae}")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--k", type=int, default=2048, help="samples of the IWAE pass")
    p.add_argument("--backend", default="inductor")
    main(p.parse_args())
