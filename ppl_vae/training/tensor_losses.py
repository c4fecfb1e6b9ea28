"""The training losses as pure tensor functions, for :class:`~ppl_vae.compiled.CompiledFunction`.

A recorded graph replays tensor operations; a number the Python read out of a tensor (``.item()``) and computed
with is baked into it. Pyro's ``Trace_ELBO.differentiable_loss`` returns ``loss + (surrogate - surrogate.item())``
where ``loss`` is a sum of Python floats read from every site (``torch_item``), and
``TraceMeanField_ELBO._differentiable_loss_particle`` reads one it then discards. :func:`trace_elbo_loss` and
:func:`trace_mean_field_elbo_loss` are those two methods of Pyro 1.9 with the floats kept as ``float64`` tensors:
the same traces, the same surrogate, the same operations in the same order, hence the same value bit for bit
(Python's float arithmetic *is* float64 arithmetic) and the same gradient — ``tests/training/test_tensor_losses.py``
checks both against Pyro on every pair of the test suite. The objectives of :mod:`ppl_vae.objectives` other than
:class:`~ppl_vae.objectives.AnnealedELBO` compute with tensors already; ``TraceEnum_ELBO.differentiable_loss``
too.

:func:`tensor_loss_and_elbo` says which function computes an objective's ``(loss, negative ELBO)``: one of these,
or ``None`` for objectives whose Python keeps state between calls (``AnnealedELBO``: its β moves every step, and a
hook on the loss advances it) or reads values (``TraceGraph_ELBO``, ``RenyiELBO``, any subclass): those train on
the traced path.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import check_fully_reparametrized, is_validation_enabled
from pyro.util import warn_if_nan

from ppl_vae.objectives import IWAE_ELBO, FreeBitsELBO

__all__ = ["trace_elbo_loss", "trace_mean_field_elbo_loss", "tensor_loss_and_elbo"]


def _value(x):
    """What Pyro's ``torch_item`` reads, as a ``float64`` tensor (a number stays a number)."""
    return x.detach().to(torch.float64) if isinstance(x, torch.Tensor) else x


def _trace_elbo_particle(model_trace, guide_trace):
    """``Trace_ELBO._differentiable_loss_particle`` (Pyro 1.9), its ELBO value a tensor."""
    elbo_particle = 0
    surrogate_elbo_particle = 0
    log_r = None
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            elbo_particle = elbo_particle + _value(site["log_prob_sum"])
            surrogate_elbo_particle = surrogate_elbo_particle + site["log_prob_sum"]
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            _, score_function_term, entropy_term = site["score_parts"]
            elbo_particle = elbo_particle - _value(site["log_prob_sum"])
            if not is_identically_zero(entropy_term):
                surrogate_elbo_particle = surrogate_elbo_particle - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)
                term = log_r.sum_to(site["cond_indep_stack"])
                surrogate_elbo_particle = surrogate_elbo_particle + (term * score_function_term).sum()
    return -elbo_particle, -surrogate_elbo_particle


def trace_elbo_loss(elbo: Trace_ELBO, model, guide, *args, **kwargs) -> torch.Tensor:
    """``elbo.differentiable_loss(model, guide, *args, **kwargs)`` of a :class:`pyro.infer.Trace_ELBO`, with the
    value Pyro sums in Python floats summed as ``float64`` tensors: the same number and gradient.

    :returns: a scalar tensor (nats, the batch sum).
    """
    loss = 0.0
    surrogate_loss = 0.0
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        loss_particle, surrogate_loss_particle = _trace_elbo_particle(model_trace, guide_trace)
        surrogate_loss = surrogate_loss + surrogate_loss_particle / elbo.num_particles
        loss = loss + loss_particle / elbo.num_particles
    warn_if_nan(surrogate_loss, "loss")
    if not isinstance(surrogate_loss, torch.Tensor):
        return loss
    # Pyro: loss + (surrogate - surrogate.item()); the difference is 0 (or NaN), and adding the float rounds it
    value = loss.to(surrogate_loss.dtype) if isinstance(loss, torch.Tensor) else loss
    return (surrogate_loss - surrogate_loss.detach()) + value


def _mean_field_particle(model_trace, guide_trace):
    """The surrogate of ``TraceMeanField_ELBO._differentiable_loss_particle`` (Pyro 1.9), without its
    ``.item()`` of a value it discards."""
    elbo_particle = 0
    for name, model_site in model_trace.nodes.items():
        if model_site["type"] == "sample":
            if model_site["is_observed"]:
                elbo_particle = elbo_particle + model_site["log_prob_sum"]
            else:
                guide_site = guide_trace.nodes[name]
                if is_validation_enabled():
                    check_fully_reparametrized(guide_site)
                try:
                    kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
                    kl_qp = scale_and_mask(kl_qp, scale=guide_site["scale"], mask=guide_site["mask"])
                    if torch.is_tensor(kl_qp):
                        kl_qp_sum = kl_qp.sum()
                    else:
                        kl_qp_sum = kl_qp * torch.Size(guide_site["fn"].batch_shape).numel()
                    elbo_particle = elbo_particle - kl_qp_sum
                except NotImplementedError:
                    entropy_term = guide_site["score_parts"].entropy_term
                    elbo_particle = elbo_particle + model_site["log_prob_sum"] - entropy_term.sum()
    for name, guide_site in guide_trace.nodes.items():
        if guide_site["type"] == "sample" and name not in model_trace.nodes:
            if is_validation_enabled():
                check_fully_reparametrized(guide_site)
            entropy_term = guide_site["score_parts"].entropy_term
            elbo_particle = elbo_particle - entropy_term.sum()
    return -elbo_particle


def trace_mean_field_elbo_loss(elbo: TraceMeanField_ELBO, model, guide, *args, **kwargs) -> torch.Tensor:
    """``elbo.differentiable_loss(model, guide, *args, **kwargs)`` of a :class:`pyro.infer.TraceMeanField_ELBO`.

    :returns: a scalar tensor (nats, the batch sum).
    """
    loss = 0.0
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        loss = loss + _mean_field_particle(model_trace, guide_trace) / elbo.num_particles
    warn_if_nan(loss, "loss")
    return loss


def _negative_elbo_is_loss(loss_fn):
    def loss_and_elbo(objective, model, guide, *args):
        loss = loss_fn(objective, model, guide, *args)
        return loss, loss.detach()

    return loss_and_elbo


def _own(objective, model, guide, *args):
    return objective.differentiable_loss_and_elbo(model, guide, *args)


_TENSOR_LOSSES: dict[type, Callable] = {
    Trace_ELBO: _negative_elbo_is_loss(trace_elbo_loss),
    TraceMeanField_ELBO: _negative_elbo_is_loss(trace_mean_field_elbo_loss),
    TraceEnum_ELBO: _negative_elbo_is_loss(lambda objective, *a: objective.differentiable_loss(*a)),
    IWAE_ELBO: _own,
    FreeBitsELBO: _own,
}


def tensor_loss_and_elbo(objective) -> Callable | None:
    """The pure tensor function ``f(objective, model, guide, x, idx) -> (loss, negative ELBO)`` that computes what
    :func:`ppl_vae.objectives.base.loss_and_elbo` computes for ``objective``, or ``None`` if there is none (the
    objective's type is matched exactly: a subclass may keep state).

    :returns: the function, or ``None``.
    """
    return _TENSOR_LOSSES.get(type(objective))
