"""Per-data-point importance log-weights ``log p(x_n, z) - log q(z | x_n)`` for any model/guide pair.

Pyro's :func:`pyro.infer.importance.vectorized_importance_weights` sums the log weights over the whole batch (one
weight per particle); the per-data-point estimators (ELBO, IWAE) need them per data point, so this module keeps the
``data`` plate's dimension: it runs the guide and then the model (replaying the guide's samples) under an outer
particle plate (:mod:`ppl_vae.traces`), and reduces every site's log density to ``(S, N)``. A latent site masked in
the model (``Distribution.mask``, as in Pyro's deep Markov model) but not in the guide counts its masked entries with
the model's own density: masked-out latents affect nothing observed, so ``p(x)`` is unchanged and the weight stays an
importance weight of it. Discrete sites of the
model that the guide does not sample and that the model marks for enumeration are summed out exactly (as
:class:`pyro.infer.TraceEnum_ELBO` does), which gives a tighter, lower-variance weight than sampling them.

Called with ``nesting`` (as every estimator and the per-datapoint fit call it), :func:`log_weights` runs a
:class:`~ppl_vae.compiled.CompiledFunction` per model/guide pair: from the :data:`~ppl_vae.compiled.RECORD_AFTER`-th
call with the same input signature on, the recorded operations of the traced computation replay without Pyro's
handlers (the same numbers, bit for bit, from the same random state; the traced path whenever a guard sees the
structure change). :func:`traced_log_weights` is the traced path itself.
"""
from __future__ import annotations

import types
import weakref

import pyro.distributions as dist
import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask

from ppl_vae.compiled import CompiledFunction, is_enabled, pair_state, pair_tensors
from ppl_vae.conventions import check_pair, default_idx, max_plate_nesting
from ppl_vae.traces import is_auxiliary, is_masked, per_point, point_log_density, sample_sites, trace_particles, vectorize_particles

__all__ = ["log_weights", "traced_log_weights", "compiled_log_weights", "prepare_pair", "traced_pair", "per_point",
           "vectorize_particles"]


def prepare_pair(model, guide, x: torch.Tensor, idx: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Check the pair once, as the estimators will run it (:func:`ppl_vae.conventions.check_pair` on two points), and
    return ``(idx, nesting)``: the points' indices (``0..N-1`` when ``None``) and the pair's plate nesting.

    :raises ValueError: naming the site and the convention when the pair does not follow them.
    """
    idx = default_idx(x, idx)
    if x.shape[0] == 0:
        raise ValueError("Expected at least one data point, got x of shape " + str(tuple(x.shape)))
    check_pair(model, guide, x[:2], idx[:2])
    return idx, max_plate_nesting(model, guide, x[:1], idx[:1])


def _innermost(fn):
    """The distribution inside ``Independent`` / masked / expanded wrappers."""
    while type(fn).__name__ in ("Independent", "MaskedDistribution", "ExpandedDistribution"):
        fn = fn.base_dist
    return fn


def traced_pair(model, guide, x, idx=None, num_samples: int = 1, nesting: int | None = None):
    """Run ``guide`` then ``model`` (replayed on the guide's samples, model-only enumerable sites enumerated) under a
    particle plate of size ``num_samples``; returns ``(model_trace, guide_trace, total_dims)``. Latent values have
    shape ``(num_samples, *batch, *event)``."""
    idx = default_idx(x, idx)
    if nesting is None:
        nesting = max_plate_nesting(model, guide, x, idx)
    guide_trace = trace_particles(guide, x, idx, num_samples, nesting)
    model_trace = trace_particles(model, x, idx, num_samples, nesting, replay=guide_trace, enumerate=True)
    return model_trace, guide_trace, nesting + 1


def log_weights(
    model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 1,
    analytic_kl: bool = False, nesting: int | None = None,
) -> torch.Tensor:
    """``log p(x_n, z_s) - log q(z_s | x_n)`` for ``z_s ~ q(. | x_n)``: a ``(num_samples, N)`` tensor.

    Differentiable (reparameterized guides): wrap in ``torch.no_grad()`` to evaluate only. With ``nesting`` given,
    repeated calls replay the recorded computation (:func:`compiled_log_weights`); the values are those of
    :func:`traced_log_weights`.

    :param x: ``(N, ...)`` data, any dtype.
    :param idx: ``(N,)`` data-point indices or ``None`` (``0..N-1``).
    :param int num_samples: ``S``, samples per point.
    :param bool analytic_kl: replace ``log p(z) - log q(z)`` of each latent site by ``-KL(q || p)`` where a closed
        form is registered (as :class:`pyro.infer.TraceMeanField_ELBO`; other sites keep the sampled terms); the
        result's mean over samples is then the lower-variance ELBO estimate, not an importance weight.
    :param int nesting: the plate nesting of the pair (found by tracing if ``None``; then the traced path runs).
    :returns: ``(S, N)`` nats.
    """
    if nesting is None or not is_enabled():
        return traced_log_weights(model, guide, x, idx, num_samples, analytic_kl, nesting)
    return compiled_log_weights(model, guide)(x, default_idx(x, idx), int(num_samples), bool(analytic_kl), int(nesting))


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _owner(fn):
    """``(object to key on, function)``: a bound method is keyed on its object (a new method object is made on every
    attribute access), anything else on itself."""
    if isinstance(fn, types.MethodType):
        return fn.__self__, fn.__func__
    return fn, None


def _resolver(fn):
    """A function returning ``fn`` without keeping it alive (``None`` once it is gone)."""
    owner, func = _owner(fn)
    ref = weakref.ref(owner)
    return (lambda: ref()) if func is None else (lambda: None if ref() is None else types.MethodType(func, ref()))


def compiled_log_weights(model, guide) -> CompiledFunction:
    """The :class:`~ppl_vae.compiled.CompiledFunction` of :func:`traced_log_weights` for this pair, called as
    ``f(x, idx, num_samples, analytic_kl, nesting)`` (one per pair, kept as long as the model and guide live).

    :returns: the compiled function.
    """
    (model_owner, model_func), (guide_owner, guide_func) = _owner(model), _owner(guide)
    try:
        per_model = _COMPILED.setdefault(model_owner, weakref.WeakKeyDictionary())
        per_guide = per_model.setdefault(guide_owner, {})
    except TypeError:  # an object that cannot be weakly referenced: a fresh function every time (never recorded)
        per_guide = {}
    compiled = per_guide.get((model_func, guide_func))
    if compiled is None:
        get_model, get_guide = _resolver(model), _resolver(guide)

        def fn(x, idx, num_samples, analytic_kl, nesting):
            return traced_log_weights(get_model(), get_guide(), x, idx, num_samples, analytic_kl, nesting)

        compiled = per_guide[(model_func, guide_func)] = CompiledFunction(
            fn, lambda: pair_tensors(get_model(), get_guide()), name="log_weights",
            state=lambda: pair_state(get_model(), get_guide()))
    return compiled


def traced_log_weights(
    model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, num_samples: int = 1,
    analytic_kl: bool = False, nesting: int | None = None,
) -> torch.Tensor:
    """:func:`log_weights` on the traced path: the guide and the model run under Pyro's handlers on every call (the
    reference of the compiled path).

    :param x: ``(N, ...)`` data, any dtype.
    :param idx: ``(N,)`` data-point indices or ``None`` (``0..N-1``).
    :param int num_samples: ``S``, samples per point.
    :param bool analytic_kl: replace ``log p(z) - log q(z)`` of each latent site by ``-KL(q || p)`` where a closed
        form is registered (as :class:`pyro.infer.TraceMeanField_ELBO`; other sites keep the sampled terms); the
        result's mean over samples is then the lower-variance ELBO estimate, not an importance weight.
    :param int nesting: the plate nesting of the pair (found by tracing if ``None``).
    :returns: ``(S, N)`` nats.
    """
    n = x.shape[0]
    model_trace, guide_trace, total = traced_pair(model, guide, x, idx, num_samples, nesting)
    nesting = total - 1
    model_names = [nm for nm, _ in sample_sites(model_trace)]
    guide_names = [nm for nm, _ in sample_sites(guide_trace)]
    kl_terms = []
    if analytic_kl and not any(s["infer"].get("_enumerate_dim") is not None for _, s in sample_sites(model_trace)):
        for name, gsite in sample_sites(guide_trace):
            if is_auxiliary(gsite) or name not in model_trace.nodes:
                continue
            msite = model_trace.nodes[name]
            if isinstance(_innermost(gsite["fn"]), dist.Delta):
                continue  # a point mass (latent-space guides, autoencoders): its density lives in its log_density
            try:
                kl = kl_divergence(gsite["fn"], msite["fn"])
            except NotImplementedError:
                continue  # no closed form: keep the sampled log p(z) - log q(z), as TraceMeanField_ELBO does
            kl_terms.append(per_point(msite, scale_and_mask(kl, 1.0, msite["mask"]), total, num_samples, n))
            model_names.remove(name)
            guide_names.remove(name)
    # a latent masked in the model but not in the guide: the guide has a density for those entries, so the model's is
    # completed with its own (p(x) is unchanged: masked-out latents affect nothing observed)
    complete = [nm for nm, gsite in sample_sites(guide_trace) if nm in model_trace.nodes and not is_auxiliary(gsite)
                and is_masked(model_trace.nodes[nm]) and not is_masked(gsite)]
    out = point_log_density(model_trace, model_names, nesting, num_samples, n, complete)
    out = out - point_log_density(guide_trace, guide_names, nesting, num_samples, n)
    for kl in kl_terms:
        out = out - kl
    return out
