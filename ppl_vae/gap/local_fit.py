"""Fitting non-amortized, per-datapoint guides q* with the generative model frozen (Cremer et al. 2018, §3).

Every data point gets its own variational parameters (a :data:`ppl_vae.guides.LOCAL_GUIDES` family over the model's
unconstrained latent space: ``"ffg"``, ``"mvn"`` — full covariance across all sites —, ``"flow"``), started from an
amortized guide or from the standard normal in that space, and optimized with Adam on its own ELBO, with a step cap.

Stopping rule (per point): the average loss over a window of steps is compared with the best previous window's (the
paper's criterion); after ``patience`` windows in a row without improvement the point has reached the noise floor of
its step size, which is then multiplied by ``lr_decay`` (its own, by scaling its Adam steps); after ``decays`` such
reductions the next plateau ends its fit (*converged*). A point still running at the cap has *hit the cap*
(:attr:`LocalFit.converged` is false): its q* is not optimal, and the gap tables report the share of such points.

The ``"flow"`` family contains the FFG: it is fitted in two stages — the FFG first (or a fitted
:class:`~ppl_vae.guides.PerDatapointNormal` handed in as ``init_guide``), then the flow started from that optimum at
the identity — so that :math:`\\mathcal{L}[q^*_{Flow}] \\ge \\mathcal{L}[q^*_{FFG}]` per point up to Monte-Carlo error;
its steps and convergence count both stages. A point whose flow ends below its Gaussian (on fresh draws) is sent back
to that Gaussian: Adam's first steps move every weight by about the step size, noise or not.

All points of a chunk are optimized *together*: one vectorized model pass per step for the points of the chunk still
running, the objective being the sum of their ELBOs (whose gradients are independent per point); a point that has
stopped leaves the pass and is frozen (its parameters restored after each of Adam's steps) while the others go on, so
a chunk costs the sum of its points' steps, not its slowest point's steps times its size. (Without a ``seed``, the
pass shrinks only when half of the points it computes have stopped — at most twice the sum —, as each new batch size
costs the fast path of :mod:`ppl_vae.compiled` a new recording.) The model sees the points' own indices ``idx``
throughout, and the fitted guide looks its rows up by them.
"""
from __future__ import annotations

import contextlib
import logging
import numbers
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ppl_vae.conventions import default_idx, max_plate_nesting
from ppl_vae.estimators.chunks import samples_last
from ppl_vae.estimators.log_weights import log_weights, prepare_pair
from ppl_vae.guides import LOCAL_GUIDES, PerDatapointNormal
from ppl_vae.latent_space import LatentSpace
from ppl_vae.streams import point_streams, sampling_from

__all__ = ["LocalFit", "fit_local_guide", "latent_moments", "frozen"]

logger = logging.getLogger(__name__)


@dataclass
class LocalFit:
    """The result of :func:`fit_local_guide` for ``N`` points.

    :ivar guide: the fitted per-datapoint guide; call it with the points' own indices ``idx``.
    :ivar steps: ``(N,)`` optimization steps each point ran.
    :ivar converged: ``(N,)`` whether each point met the stopping rule before the step cap.
    :ivar curve: ``{step: (N,) ELBO}`` recorded along the way (semi-amortized inference curves).
    :ivar int loop_steps: steps of the vectorized loop (the slowest point's; the most of any chunk).
    """

    guide: torch.nn.Module
    steps: torch.Tensor
    converged: torch.Tensor
    curve: dict[int, torch.Tensor] = field(default_factory=dict)
    loop_steps: int = 0


@contextlib.contextmanager
def frozen(*modules):
    """Temporarily set ``requires_grad=False`` on the parameters of ``modules`` (the generative model)."""
    params = [p for m in modules if isinstance(m, torch.nn.Module) for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@torch.no_grad()
def latent_moments(space: LatentSpace, guide, x: torch.Tensor, idx: torch.Tensor | None = None,
                   num_samples: int = 256, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of any guide's ``q(u | x)`` in the model's latent space: ``(loc, scale)``, each
    ``(N, D)``. Exact for guides that expose ``latent_loc_scale(x)`` (the amortized Gaussian) and for a fitted
    :class:`~ppl_vae.guides.PerDatapointNormal`, else from ``num_samples`` draws (from per-point streams when
    ``seed`` is given, :mod:`ppl_vae.streams`)."""
    if hasattr(guide, "latent_loc_scale") and getattr(guide, "space", None) is not None and guide.space.dim == space.dim:
        return guide.latent_loc_scale(x)
    idx = default_idx(x, idx)
    if isinstance(guide, PerDatapointNormal) and guide.space.dim == space.dim:
        return guide.loc_scale(idx)
    nesting = max_plate_nesting(space.model, guide, x[:1], idx[:1])
    with sampling_from(point_streams(seed, idx, "q*_moments", x.device)):
        u, _ = space.sample_guide(guide, x, idx, num_samples, nesting)
    u = samples_last(u)
    return u.mean(-1), u.std(-1).clamp_min(1e-4)


def fit_local_guide(
    model, x: torch.Tensor, idx: torch.Tensor | None = None, family: str = "ffg", init_guide=None,
    max_steps: int = 3000, lr: float = 1e-2, num_samples: int = 8, window: int = 100, patience: int = 2,
    lr_decay: float = 0.3, decays: int = 2, record_steps=(), eval_samples: int = 100, seed: int | None = None,
    vectorized: bool = True, chunk_points: int = 1000, progress: bool = False, **family_kwargs,
) -> LocalFit:
    """Optimize a per-datapoint guide of ``family`` for every row of ``x (N, ...)`` with ``model`` frozen.

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` the points' own indices (the model sees them; the guide is keyed by them) or ``None``.
    :param str family: ``"ffg"``, ``"mvn"`` or ``"flow"`` (:data:`ppl_vae.guides.LOCAL_GUIDES`).
    :param init_guide: start from this (amortized) guide's mean and scale in the latent space; ``None`` starts from
        ``N(0, I)`` there.
    :param int max_steps: step cap.
    :param float lr: Adam learning rate.
    :param int num_samples: Monte-Carlo samples per point per step.
    :param int window: steps per window of the stopping rule (see the module): a window improves when its average
        loss beats the best previous window's (Cremer et al.: 100).
    :param int patience: windows in a row without improvement that make a plateau (Cremer et al.: 1, which on noisy
        objectives stops too early — on the linear-Gaussian test it overstates the FFG approximation gap by 0.04 nats
        with 8 samples per step and by 0.8 nats with 1). With the step-size decays, 2 ends 0.043 nats above a long run
        on Cremer et al.'s VAE at 1.87× the samples × steps of the one-plateau rule (3: +0.047 at 2.56×), and 0.02
        nats short of the closed-form optimum on a linear-Gaussian model with a 2.9-nat FFG gap (3: 0.01; 50-step
        windows with patience 3, 1.40× on the VAE, stop 0.07 short there) — ``benchmarks/q_star_convergence.py`` and
        ``benchmarks/q_star_valley.py``.
    :param float lr_decay: factor of a point's step size at each plateau, ``0 < lr_decay <= 1``.
    :param int decays: step-size reductions before a plateau stops the point (0: the first plateau stops it, the
        rule before issue 12; ``benchmarks/q_star_convergence.py`` measures the choice).
    :param record_steps: steps at which to record each point's ELBO (``eval_samples`` samples); step 0 is the
        initialization (with ``init_guide``: the amortized guide itself).
    :param int eval_samples: samples per point of the recorded ELBOs.
    :param int seed: draw every point's random numbers (its Monte-Carlo samples, a random initialization of its
        parameters) from its own streams, seeded from ``(seed, idx[n], purpose)`` (:mod:`ppl_vae.streams`): a
        point's fit is then the same whatever other points share the call or the chunk (``None``: the global random
        generator, and a point's fit depends on its neighbours).
    :param bool vectorized: all points of a chunk in one batch (``True``) or one point at a time (the slow
        reference, for tests and benchmarks).
    :param int chunk_points: points optimized together.
    :returns: :class:`LocalFit`.
    :raises ValueError: for an unknown family, options out of range, a pair that breaks the conventions, or discrete
        latent sites that are not enumerated (naming the site).
    :raises TypeError: if the family is passed in the place of ``idx``.
    """
    if isinstance(idx, str):
        raise TypeError("fit_local_guide(model, x, idx=None, family='ffg', ...): pass the family by keyword")
    if family not in LOCAL_GUIDES:
        raise ValueError(f"Unknown per-datapoint family {family!r}; expected one of {sorted(LOCAL_GUIDES)}")
    for name, value in (("max_steps", max_steps), ("num_samples", num_samples), ("window", window),
                        ("patience", patience), ("eval_samples", eval_samples), ("chunk_points", chunk_points)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"Expected {name} >= 1 (an integer), got {value!r}")
    if family_kwargs and family != "flow":
        raise ValueError(f"The per-datapoint family {family!r} takes no options; got {sorted(family_kwargs)} (options "
                         "such as flow=, num_flows=, hidden= belong to family='flow')")
    for name in ("num_flows", "hidden", "count_bins"):
        value = family_kwargs.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"Expected {name} >= 1 (an integer), got {value!r}")
    if decays < 0 or not 0 < lr_decay <= 1:
        raise ValueError(f"Expected decays >= 0 and 0 < lr_decay <= 1, got decays={decays}, lr_decay={lr_decay}")
    idx = default_idx(x, idx)
    n = x.shape[0]
    space = LatentSpace(model, x, idx)
    space.require_continuous(f"the per-datapoint family {family!r}")
    if init_guide is not None:
        prepare_pair(model, init_guide, x, idx)
    record = sorted({int(s) for s in record_steps})
    options = {"max_steps": max_steps, "lr": lr, "num_samples": num_samples, "window": window, "patience": patience,
               "lr_decay": lr_decay, "decays": decays, "eval_samples": eval_samples, "seed": seed}
    bounds = [(a, min(n, a + chunk_points)) for a in range(0, n, chunk_points)] if vectorized else \
        [(a, a + 1) for a in range(n)]
    bar = tqdm(total=len(bounds), desc=f"q*_{family}", unit="chunk", disable=not progress)
    fits = []
    with frozen(model, init_guide):
        for a, b in bounds:
            fits.append(_fit_chunk(model, space, x[a:b], idx[a:b], family, init_guide, options, record, family_kwargs))
            bar.update(1)
    bar.close()
    return fits[0] if len(fits) == 1 else _merge(fits, space, family, idx, family_kwargs, record)


def _build(family, space, idx, loc, scale, family_kwargs, seed, device):
    """The per-datapoint guide of ``family`` for the points ``idx``; with a ``seed``, a family whose construction
    draws random numbers (a coupling flow's first-layer tables) is built point by point from each point's stream and
    its rows stacked (every parameter of a per-datapoint family is a table with one row per point)."""
    before = torch.random.get_rng_state()
    guide = LOCAL_GUIDES[family](space, idx, loc, scale, **family_kwargs).to(device)
    if seed is None or torch.equal(before, torch.random.get_rng_state()):
        return guide
    streams = point_streams(seed, idx, f"q*_{family}_init")
    rows = []
    for k in range(len(idx)):
        with streams.fork(k):
            rows.append(LOCAL_GUIDES[family](space, idx[k:k + 1], None if loc is None else loc[k:k + 1],
                                             None if scale is None else scale[k:k + 1], **family_kwargs))
    with torch.no_grad():
        for name, p in guide.named_parameters():
            p.copy_(torch.cat([dict(r.named_parameters())[name] for r in rows], 0))
    return guide


def _fit_chunk(model, space, x, idx, family, init_guide, options, record, family_kwargs) -> LocalFit:
    seed = options["seed"]
    if family != "flow":
        loc, scale = (None, None) if init_guide is None else latent_moments(space, init_guide, x, idx, seed=seed)
        guide = _build(family, space, idx, loc, scale, family_kwargs, seed, x.device)
        return _optimize(model, guide, x, idx, init_guide, options, record, family)
    # the flow family contains the FFG: fit the FFG first (unless handed a fitted one), then the flow on top of it,
    # started at the identity, so that L[q*_Flow] >= L[q*_FFG] up to Monte-Carlo error
    first = None
    if not isinstance(init_guide, PerDatapointNormal):
        start = LOCAL_GUIDES["ffg"](space, idx, *((None, None) if init_guide is None else
                                                  latent_moments(space, init_guide, x, idx, seed=seed))).to(x.device)
        first = _optimize(model, start, x, idx, init_guide, options, record, "ffg", final=False)
        init_guide = first.guide
    loc, scale = init_guide.loc_scale(idx)
    guide = _build("flow", space, idx, loc.detach(), scale.detach(), family_kwargs, seed, x.device)
    offset = 0 if first is None else first.loop_steps
    start = {name: p.detach().clone() for name, p in guide.named_parameters()}
    second = _optimize(model, guide, x, idx, init_guide if first is None else None, options,
                       [s for s in record if s > offset or first is None], "flow", offset=offset)
    _no_worse_than_the_start(model, guide, init_guide, start, x, idx, options["eval_samples"], seed)
    if first is None:
        return second
    return LocalFit(guide, first.steps + second.steps, first.converged & second.converged,
                    dict(sorted({**first.curve, **second.curve}.items())), offset + second.loop_steps)


def _no_worse_than_the_start(model, flow, gaussian, start: dict, x, idx, samples: int, seed=None) -> torch.Tensor:
    """Send back to the fitted Gaussian the points whose flow scores below it.

    Adam's first steps move every weight by about the step size whatever the gradient, and at the Gaussian's optimum
    the gradient is mostly noise: a short or noisy fit can leave a point's flow below the Gaussian it started from.
    Each point's flow and Gaussian are compared on ``samples`` fresh draws; where the flow is lower, the point's rows
    of every parameter table return to their start (the identity, i.e. that Gaussian exactly). The bounds reported
    later use their own draws, so they remain unbiased ELBOs of the guide kept.

    :returns: ``(N,)`` whether each point was sent back.
    """
    rows = flow.points(idx)
    with torch.no_grad():
        with sampling_from(point_streams(seed, idx, "q*_flow_check", x.device)):
            flow_elbo = samples_last(log_weights(model, flow, x, idx, samples)).mean(-1)
        with sampling_from(point_streams(seed, idx, "q*_flow_check_start", x.device)):
            start_elbo = samples_last(log_weights(model, gaussian, x, idx, samples)).mean(-1)
        worse = flow_elbo < start_elbo
        if bool(worse.any()):
            for name, p in flow.named_parameters():  # every table of a per-point flow has one row per point
                p[rows[worse]] = start[name][rows[worse]]
    if bool(worse.any()):
        logger.info("q*_flow: %d of %d points ended below their fitted Gaussian and were sent back to it",
                    int(worse.sum()), worse.numel())
    return worse


def _optimize(model, guide, x, idx, init_guide, options, record, family: str, offset: int = 0,
              final: bool = True) -> LocalFit:
    """The vectorized optimization of ``guide``'s per-point tables (steps counted from ``offset``); records the
    curve at the steps of ``record`` it reaches (and, if ``final``, at the later ones with the final values). With
    ``options["seed"]``, every point draws from its own streams (purpose ``q*_<family>``)."""
    o = options
    n = x.shape[0]
    fit_streams = point_streams(o["seed"], idx, f"q*_{family}", x.device)
    curve_streams = point_streams(o["seed"], idx, f"q*_{family}_curve", x.device)
    params = list(guide.parameters())
    optimizer = torch.optim.Adam(params, lr=o["lr"])
    nesting = max_plate_nesting(model, guide, x[:1], idx[:1])
    # per point: the factor its Adam steps are scaled by (its own learning rate / lr; 0 once it has stopped)
    factor = torch.ones(n, device=x.device, dtype=params[0].dtype)
    steps = torch.zeros(n, dtype=torch.long, device=x.device)
    window_sum = 0.0
    best = torch.full((n,), float("inf"), device=x.device)
    stale = torch.zeros(n, dtype=torch.long, device=x.device)
    decayed = torch.zeros(n, dtype=torch.long, device=x.device)
    curve = {}

    def evaluate():
        with torch.no_grad(), sampling_from(curve_streams):
            return samples_last(log_weights(model, guide, x, idx, o["eval_samples"], nesting=nesting)).mean(-1)

    if 0 in record and offset == 0:
        if init_guide is not None:  # step 0 is the amortized guide itself
            with torch.no_grad(), sampling_from(curve_streams):
                curve[0] = samples_last(log_weights(model, init_guide, x, idx, o["eval_samples"])).mean(-1)
        else:
            curve[0] = evaluate()
    # rows: the points the pass computes (None: all), with their data, indices and streams
    step, rows, xs, ids, streams, changed = offset, None, x, idx, fit_streams, True
    while step < offset + o["max_steps"] and bool((factor > 0).any()):
        step += 1
        # the pass leaves out points that have stopped (the model and guide see the others alone, with their own idx
        # and streams): with per-point streams as soon as they stop; without them once half the points computed have
        # stopped, as every batch size is a new graph for the fast path (ppl_vae.compiled), whose replays are what
        # makes an unseeded fit fast. Stopped points' rows are restored after Adam's step.
        if changed:  # the factors change only at the end of a window
            changed, running = False, factor > 0
            if fit_streams is not None or 2 * int(running.sum()) <= (n if rows is None else len(rows)):
                rows = None if bool(running.all()) else running.nonzero().squeeze(1)
                xs, ids = (x, idx) if rows is None else (x[rows], idx[rows])
                streams = fit_streams if fit_streams is None or rows is None else fit_streams.select(rows.tolist())
        with sampling_from(streams):
            loss = -samples_last(log_weights(model, guide, xs, ids, o["num_samples"], nesting=nesting)).mean(-1)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        loss_per_point = loss.detach() if rows is None else loss.new_zeros(n).index_copy(0, rows, loss.detach())
        keep = None if bool((factor == 1).all()) else [p.detach().clone() for p in params]
        optimizer.step()
        with torch.no_grad():
            if keep is not None:  # each point's step scaled by its factor (rows of every per-point table)
                for p, old in zip(params, keep):
                    f = factor.reshape(-1, *([1] * (p.dim() - 1)))
                    p.copy_(torch.where(f == 1, p, torch.lerp(old, p, f)))
            steps += (factor > 0).long()
            window_sum = window_sum + loss_per_point
            if (step - offset) % o["window"] == 0:
                avg = window_sum / o["window"]
                improved = avg < best
                stale = torch.where(improved, 0, stale + 1)
                # a plateau (patience windows without a better average): a smaller step, or, after `decays` of
                # them, the end of this point's fit
                plateau = (stale >= o["patience"]) & (factor > 0)
                decay = plateau & (decayed < o["decays"])
                factor = torch.where(decay, factor * o["lr_decay"], torch.where(plateau, 0.0, factor))
                decayed, stale = decayed + decay.long(), torch.where(decay, 0, stale)
                changed = True
                best = torch.minimum(best, avg)
                window_sum = 0.0
        if step in record:
            curve[step] = evaluate()
    if final:
        for s in record:  # points frozen before a recorded step keep their final value
            if s not in curve:
                curve[s] = evaluate()
    return LocalFit(guide, steps, factor == 0, dict(sorted(curve.items())), step - offset)


def _merge(fits, space, family, idx, family_kwargs, record) -> LocalFit:
    """Concatenate per-chunk guides' parameter tables into one guide over all points."""
    device = fits[0].steps.device
    merged = LOCAL_GUIDES[family](space, idx, **family_kwargs).to(device)
    with torch.no_grad():
        for name, p in merged.named_parameters():
            p.copy_(torch.cat([dict(f.guide.named_parameters())[name] for f in fits], 0))
    curve = {s: torch.cat([f.curve[s] for f in fits]) for s in record}
    return LocalFit(merged, torch.cat([f.steps for f in fits]), torch.cat([f.converged for f in fits]), curve,
                    max(f.loop_steps for f in fits))
