"""The inference gap and its decomposition (Cremer, Li & Duvenaud 2018), for any model/guide pair.

.. math::
    \\underbrace{\\log p(x) - \\mathcal{L}[q]}_{\\text{inference gap}}
    = \\underbrace{\\log p(x) - \\mathcal{L}[q^*]}_{\\text{approximation gap}}
    + \\underbrace{\\mathcal{L}[q^*] - \\mathcal{L}[q]}_{\\text{amortization gap}}

``q`` is the amortized guide, ``q*`` the best guide of a family for each data point separately (fitted by
:func:`ppl_vae.gap.local_fit.fit_local_guide` with the model frozen), and ``log p(x)`` is replaced by
:math:`\\log\\hat p(x)`: for each point, one of the strong estimators — IWAE-K with the amortized guide or with a
``q*`` as proposal, or AIS — chosen on an independent pilot run and evaluated afresh
(:func:`ppl_vae.estimators.select_by_pilot`), so that it stays a stochastic lower bound of ``log p(x)``. Final bounds
are evaluated with many samples (``eval_samples``), never with the noisy optimization objective.

The approximation and amortization gaps of the table are those of the *encoder's family*: the per-datapoint family
that contains the amortized guide's family (FFG for the amortized Gaussian, the flow family for flow encoders). For
another guide the family is recognised from its distributions (Gaussians: FFG; multivariate normals: full
covariance) or must be named (``encoder_family=``); a guide whose family none contains gets no split, only the
inference gap and the q* bounds.
"""
from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import biject_to

from ppl_vae.conventions import default_idx, max_plate_nesting, support_name
from ppl_vae.estimators import ais as ais_estimator
from ppl_vae.estimators import elbo_and_iwae, iwae_bound, select_by_pilot
from ppl_vae.estimators.mixture import mixture_iwae, scores_foreign_points
from ppl_vae.gap.local_fit import fit_local_guide
from ppl_vae.guides import LOCAL_GUIDES, AmortizedFlow, AmortizedNormal, LatentSpaceGuide
from ppl_vae.latent_space import LatentSpace
from ppl_vae.traces import is_auxiliary, sample_sites, trace_particles

__all__ = ["InferenceGap", "inference_gap", "encoder_family", "FAMILY_NAMES"]

_FIT_OPTIONS = frozenset(inspect.signature(fit_local_guide).parameters) - {"family_kwargs"}

logger = logging.getLogger(__name__)

FAMILY_NAMES = {"ffg": "FFG", "flow": "Flow", "mvn": "Full-cov"}


def _innermost(fn):
    while isinstance(fn, (dist.Independent, torch.distributions.Independent)) or type(fn).__name__ in (
            "MaskedDistribution", "ExpandedDistribution"):
        fn = fn.base_dist
    return fn


def encoder_family(guide, model=None, x: torch.Tensor | None = None, idx: torch.Tensor | None = None) -> str | None:
    """The per-datapoint family that contains an amortized guide's family, or ``None`` if none is known to.

    :class:`~ppl_vae.guides.AmortizedNormal` → ``"ffg"``; :class:`~ppl_vae.guides.AmortizedFlow` → ``"flow"``; any
    other guide is traced on ``(x, idx)`` with two particles (needs ``model`` and ``x``): diagonal Gaussians at every
    site (``Normal`` for real sites, ``Normal`` pushed through ``biject_to(support)`` for constrained ones) whose
    parameters depend on ``x`` only → ``"ffg"``; such multivariate normals → ``"mvn"`` (the full-covariance family
    contains them); anything else — other families, or parameters that depend on other sites' samples (a structured
    guide) → ``None``.
    """
    if isinstance(guide, AmortizedNormal):
        return "ffg"
    if isinstance(guide, AmortizedFlow):
        return "flow"
    if isinstance(guide, LatentSpaceGuide):
        for name, cls in LOCAL_GUIDES.items():
            if isinstance(guide, cls):
                return name
        return None
    if model is None or x is None:
        return None
    idx = default_idx(x, idx)
    nesting = max_plate_nesting(model, guide, x[:2], idx[:2])
    with torch.no_grad():
        trace = trace_particles(guide, x[:2], idx[:2], 2, nesting)  # 2 particles: parameters must not differ
        model_trace = trace_particles(model, x[:2], idx[:2], 1, nesting)
    kinds = set()
    for name, site in sample_sites(trace):
        if site["is_observed"] or is_auxiliary(site):
            continue
        fn = _innermost(site["fn"])
        support = model_trace.nodes[name]["fn"].support
        base = _innermost(fn.base_dist) if isinstance(fn, torch.distributions.TransformedDistribution) else fn
        if _depends_on_samples(base):  # a structured guide: this site's parameters depend on earlier samples
            kinds.add(None)
        elif isinstance(fn, torch.distributions.TransformedDistribution):
            ok = isinstance(base, torch.distributions.Normal) and len(fn.transforms) == 1 and \
                repr(fn.transforms[0]) == repr(biject_to(support))
            kinds.add("ffg" if ok else None)
        elif isinstance(fn, torch.distributions.Normal) and support_name(support) == "real":
            kinds.add("ffg")
        elif isinstance(fn, torch.distributions.MultivariateNormal) and support_name(support) == "real":
            kinds.add("mvn")
        else:
            kinds.add(None)
    if None in kinds or not kinds:
        return None
    return "mvn" if "mvn" in kinds else "ffg"


def _depends_on_samples(fn) -> bool:
    """Whether a distribution's parameters differ across the leading particle dimension (they then depend on other
    sampled sites: the guide is not mean-field)."""
    for name in ("loc", "scale", "scale_tril"):
        v = getattr(fn, name, None)
        if isinstance(v, torch.Tensor) and v.dim() > fn.event_dim and v.shape[0] > 1 and not torch.equal(v[:1].expand_as(v), v):
            return True
    return False


_recognise_family = encoder_family  # inference_gap's argument of the same name shadows it


def _mean_se(t: torch.Tensor) -> tuple[float, float]:
    n = t.numel()
    return t.mean().item(), (t.std().item() / math.sqrt(n) if n > 1 else 0.0)


@dataclass
class InferenceGap:
    """Per-point bounds of ``N`` data points (nats) and the gaps derived from them.

    :ivar log_p_hat: ``(N,)`` log p̂(x), a stochastic lower bound of log p(x) (see the module).
    :ivar elbo_amortized: ``(N,)`` L[q].
    :ivar elbo_local: ``{family: (N,)}`` L[q*_family].
    :ivar encoder_family: the family whose gaps are the headline, or ``None`` (no split reported).
    :ivar steps: ``{family: (N,)}`` optimization steps of q*.
    :ivar converged: ``{family: (N,)}`` whether q* met its stopping rule before the step cap.
    :ivar curve: ``{k: (N,)}`` ELBO after ``k`` refinement steps from the encoder (encoder family).
    :ivar estimates: every estimator's per-point values and diagnostics (IWAE with each proposal, AIS, Pareto k̂).
    :ivar log_p_hat_from: the estimator log p̂ comes from (chosen for the study on an independent pilot run).
    :ivar info: settings.
    :ivar pilots: ``{candidate: (N,)}`` the pilot estimates log p̂'s estimator was chosen on (so that the gaps of
        several sets of points, concatenated, choose as one study of all of them would: :meth:`concat`).
    :ivar idx: ``(N,)`` the points' own indices, or ``None``.
    """

    log_p_hat: torch.Tensor
    elbo_amortized: torch.Tensor
    elbo_local: dict[str, torch.Tensor]
    encoder_family: str | None
    steps: dict[str, torch.Tensor] = field(default_factory=dict)
    curve: dict[int, torch.Tensor] = field(default_factory=dict)
    estimates: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    converged: dict[str, torch.Tensor] = field(default_factory=dict)
    log_p_hat_from: str = ""
    pilots: dict[str, torch.Tensor] = field(default_factory=dict)
    idx: torch.Tensor | None = None

    def _family(self, family: str | None) -> str:
        family = family or self.encoder_family
        if family is None:
            raise ValueError("The encoder's family is unknown (no per-datapoint family is known to contain it), so its "
                             "gap has no split: pass family='ffg', 'mvn' or 'flow' explicitly, or encoder_family= to "
                             "inference_gap")
        if family not in self.elbo_local:
            raise ValueError(f"Expected a fitted family among {sorted(self.elbo_local)}, got {family!r}")
        return family

    def approximation_gap(self, family: str | None = None) -> torch.Tensor:
        """``log p̂(x) - L[q*]`` per point ``(N,)``."""
        return self.log_p_hat - self.elbo_local[self._family(family)]

    def amortization_gap(self, family: str | None = None) -> torch.Tensor:
        """``L[q*] - L[q]`` per point ``(N,)``."""
        return self.elbo_local[self._family(family)] - self.elbo_amortized

    def inference_gap(self) -> torch.Tensor:
        """``log p̂(x) - L[q]`` per point ``(N,)``."""
        return self.log_p_hat - self.elbo_amortized

    def hit_cap(self, family: str | None = None) -> float:
        """The share of points whose q* optimization hit the step cap instead of converging."""
        c = self.converged.get(self._family(family))
        return float("nan") if c is None else 1.0 - c.float().mean().item()

    def rows(self) -> list[tuple[str, float, float]]:
        """``(row name, mean, standard error)`` in the layout of Cremer et al. (2018)'s Table 2; the approximation
        and amortization gaps are those of the encoder's family (:attr:`encoder_family`; absent when unknown)."""
        out = [("log p̂(x)", *_mean_se(self.log_p_hat))]
        for family in ("flow", "mvn", "ffg"):
            if family in self.elbo_local:
                out.append((f"L[q*_{FAMILY_NAMES[family]}]", *_mean_se(self.elbo_local[family])))
        out.append(("L[q]", *_mean_se(self.elbo_amortized)))
        if self.encoder_family is not None:
            out.append(("Approximation gap", *_mean_se(self.approximation_gap())))
            out.append(("Amortization gap", *_mean_se(self.amortization_gap())))
        out.append(("Inference gap", *_mean_se(self.inference_gap())))
        return out

    def to_dict(self, per_point: bool = True) -> dict:
        def t(v):
            return v.detach().cpu().tolist()

        out = {"encoder_family": self.encoder_family, "num_points": self.log_p_hat.numel(), "info": self.info,
               "summary": {name: {"mean": m, "stderr": s} for name, m, s in self.rows()},
               "mean_steps": {k: v.float().mean().item() for k, v in self.steps.items()},
               "hit_step_cap": {k: 1.0 - v.float().mean().item() for k, v in self.converged.items()},
               "log_p_hat_from": self.log_p_hat_from,
               "semi_amortized_curve": {str(k): _mean_se(v)[0] for k, v in self.curve.items()}}
        if per_point:
            out["dtype"] = str(self.log_p_hat.dtype).removeprefix("torch.")
            out["per_point"] = {"log_p_hat": t(self.log_p_hat), "elbo_amortized": t(self.elbo_amortized),
                                **{f"elbo_local_{k}": t(v) for k, v in self.elbo_local.items()},
                                **{f"steps_{k}": t(v) for k, v in self.steps.items()},
                                **{f"converged_{k}": t(v) for k, v in self.converged.items()},
                                **{k: t(v) for k, v in self.estimates.items()}}
            out["per_point_fit"] = {"steps": {k: t(v) for k, v in self.steps.items()},
                                    "converged": {k: t(v) for k, v in self.converged.items()},
                                    "curve": {str(k): t(v) for k, v in self.curve.items()},
                                    "pilots": {k: t(v) for k, v in self.pilots.items()},
                                    "idx": None if self.idx is None else t(self.idx)}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> InferenceGap:
        """The gap :meth:`to_dict` wrote with its per-point values, exactly (float32 values written as JSON read
        back bitwise).

        :param dict data: :meth:`to_dict`'s output (``per_point=True``), e.g. a column of a saved report's JSON.
        :returns: the gap.
        :raises ValueError: if ``data`` has no per-point values (a summary cannot be read back).
        """
        if "per_point" not in data or "per_point_fit" not in data:
            raise ValueError("Expected a gap written with its per-point values (to_dict(per_point=True)), got only "
                             f"{sorted(data)}")
        dtype = getattr(torch, data.get("dtype", "float32"))

        def values(v, kind=None):
            return torch.tensor([math.nan if e is None else e for e in v], dtype=kind or dtype)

        points, fit = data["per_point"], data["per_point_fit"]
        local = {k.removeprefix("elbo_local_"): values(v) for k, v in points.items() if k.startswith("elbo_local_")}
        estimates = {k: values(v) for k, v in points.items() if k not in ("log_p_hat", "elbo_amortized")
                     and not k.startswith(("elbo_local_", "steps_", "converged_"))}  # (the fit's: per_point_fit)
        return cls(values(points["log_p_hat"]), values(points["elbo_amortized"]), local, data["encoder_family"],
                   {k: values(v, torch.long) for k, v in fit["steps"].items()},
                   {int(k): values(v) for k, v in fit["curve"].items()}, estimates, dict(data["info"]),
                   {k: values(v, torch.bool) for k, v in fit["converged"].items()}, data["log_p_hat_from"],
                   {k: values(v) for k, v in fit["pilots"].items()},
                   None if fit["idx"] is None else values(fit["idx"], torch.long))

    @classmethod
    def concat(cls, parts: Sequence[InferenceGap]) -> InferenceGap:
        """One study of the points of several, in their order: every per-point value concatenated, and log p̂'s
        estimator chosen again on the pilots of all the points — exactly what :func:`inference_gap` returns on all
        the points at once when each point's result does not depend on the others (a ``seed``: per-point random
        streams).

        :param parts: gaps of disjoint sets of points, measured with the same settings.
        :returns: the gap of all their points.
        :raises ValueError: for no parts, parts measured with other settings or families, parts without pilots, or a
            point in two parts.
        """
        if not parts:
            raise ValueError("Expected at least one gap to concatenate, got none")
        first = parts[0]
        settings = {k: v for k, v in first.info.items() if k != "warning"}
        for p in parts[1:]:
            other = {k: v for k, v in p.info.items() if k != "warning"}
            if other != settings or p.encoder_family != first.encoder_family:
                differ = sorted(k for k in {*settings, *other} if settings.get(k) != other.get(k))
                if p.encoder_family != first.encoder_family:
                    differ.append("encoder family")
                raise ValueError(f"Expected gaps measured with the same settings, but {differ} differ: "
                                 f"{ {k: settings.get(k) for k in differ} } and { {k: other.get(k) for k in differ} }")
            for what in ("elbo_local", "steps", "converged", "curve", "estimates", "pilots"):
                if set(getattr(p, what)) != set(getattr(first, what)):
                    raise ValueError(f"Expected gaps with the same {what}, got {sorted(getattr(first, what))} and "
                                     f"{sorted(getattr(p, what))}")
        if not first.pilots:
            raise ValueError("Expected gaps with their pilot estimates (measured by this version of inference_gap), "
                             "got none: log p̂'s estimator cannot be chosen for the points together")
        if any(p.idx is None for p in parts):
            idx = None
        else:
            idx = torch.cat([p.idx for p in parts])
            if idx.unique().numel() != idx.numel():
                raise ValueError("Expected gaps of disjoint sets of points, but some points appear in two of them")

        def cat(what):
            return {k: torch.cat([getattr(p, what)[k] for p in parts]) for k in getattr(first, what)}

        gap = cls(first.log_p_hat, torch.cat([p.elbo_amortized for p in parts]), cat("elbo_local"), first.encoder_family,
                  cat("steps"), cat("curve"), cat("estimates"), dict(settings), cat("converged"), "", cat("pilots"),
                  idx)
        _choose_log_p_hat(gap)
        return gap


def _choose_log_p_hat(gap: InferenceGap) -> None:
    """Set ``gap.log_p_hat`` to the full-budget estimates of the candidate whose pilots have the highest mean
    (:func:`~ppl_vae.estimators.select_by_pilot`), and warn when the amortization gap is negative beyond its error."""
    full = {name: gap.estimates[name] for name in gap.info["log_p_hat_candidates"]}
    gap.log_p_hat, gap.log_p_hat_from = select_by_pilot(full, {name: gap.pilots[name] for name in full})
    gap.info.pop("warning", None)
    if gap.encoder_family is not None:
        mean, se = _mean_se(gap.amortization_gap())
        if mean < -3 * max(se, 1e-12):
            logger.warning("The amortization gap is negative beyond its Monte-Carlo error (%.3f ± %.3f nats): q*_%s "
                           "does not contain the encoder's family; name the family that does with encoder_family=",
                           mean, se, gap.encoder_family)
            gap.info["warning"] = (f"amortization gap {mean:.3f} ± {se:.3f} < 0: q*_{gap.encoder_family} may not "
                                   "contain the encoder")



def inference_gap(
    model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, families=("ffg", "flow"),
    eval_samples: int = 5000, init: str = "guide", use_ais: bool = False, ais_kwargs: dict | None = None,
    record_steps=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), local_kwargs: dict | None = None,
    seed: int = 0, progress: bool = False, encoder_family: str | None = "auto", pilot_fraction: float = 0.1,
) -> InferenceGap:
    """Measure L[q], L[q*] for each family, log p̂(x), and the gaps, on the points ``x (N, ...)``.

    :param guide: the amortized guide.
    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` the points' own indices (the model and every guide see them) or ``None``.
    :param families: per-datapoint families to fit (``"ffg"``, ``"flow"``, ``"mvn"``); the encoder's family is
        always included.
    :param int eval_samples: samples per point for every final bound (ELBOs and IWAE).
    :param str init: ``"guide"`` starts every ``q*`` at the amortized guide, ``"prior"`` at ``N(0, I)`` in the
        latent space.
    :param bool use_ais: include AIS (from the prior) among the candidates of log p̂(x); ``ais_kwargs`` go to
        :func:`~ppl_vae.estimators.ais`.
    :param record_steps: steps at which the semi-amortized curve (encoder family, from the encoder) is recorded.
    :param dict local_kwargs: options of :func:`~ppl_vae.gap.local_fit.fit_local_guide` (``max_steps``, ``lr``...).
    :param int seed: every random number of a point (its importance samples, q* fits, AIS chains, pilots) comes from
        its own streams, seeded from ``(seed, idx[n], purpose)`` (:mod:`ppl_vae.streams`): a point's results are the
        same whether it is measured alone, in a chunk, in another shard or on another process, and the gaps of
        shards concatenate (:meth:`InferenceGap.concat`) into the study of all their points.
    :param encoder_family: the per-datapoint family that contains the guide's family: ``"auto"`` recognises it
        (:func:`encoder_family`), ``None`` reports no approximation/amortization split.
    :param float pilot_fraction: the share of each estimator's budget spent on the pilot that chooses log p̂'s
        estimator per point (:func:`~ppl_vae.estimators.select_by_pilot`).
    :returns: :class:`InferenceGap`.
    :raises ValueError: for bad options, or a pair that breaks the conventions (naming the site).
    """
    if init not in ("guide", "prior"):
        raise ValueError(f"Expected init 'guide' or 'prior', got {init!r}")
    unknown = [f for f in families if f not in FAMILY_NAMES]
    if unknown:
        raise ValueError(f"Unknown per-datapoint families {unknown}; expected some of {sorted(FAMILY_NAMES)}")
    if not 0 < pilot_fraction <= 1:
        raise ValueError(f"Expected 0 < pilot_fraction <= 1, got {pilot_fraction}")
    local_kwargs = dict(local_kwargs or {})
    # options of the flow family itself (flow=, num_flows=, hidden=, count_bins=) go to its fit only
    flow_kwargs = {k: local_kwargs.pop(k) for k in list(local_kwargs) if k not in _FIT_OPTIONS}
    if flow_kwargs and "flow" not in families:
        raise ValueError(f"local_kwargs {sorted(flow_kwargs)} are options of the 'flow' family, which is not among "
                         f"the families fitted ({list(families)})")
    idx = default_idx(x, idx)
    enc = _recognise_family(guide, model, x, idx) if encoder_family == "auto" else encoder_family
    if enc is not None and enc not in FAMILY_NAMES:
        raise ValueError(f"Expected encoder_family among {sorted(FAMILY_NAMES)}, 'auto' or None, got {enc!r}")
    families = list(dict.fromkeys(([enc] if enc else []) + list(families)))
    pyro.set_rng_seed(seed)  # for anything outside the per-point streams (checks that draw)
    estimates, khats, full, proposals = {}, {}, {}, {"iwae_amortized": guide}
    elbo_q, iwae_q, khats["iwae_amortized"] = elbo_and_iwae(model, guide, x, idx, eval_samples, progress=progress,
                                                            desc="L[q]", seed=seed, purpose="L[q]")
    full["iwae_amortized"] = iwae_q.per_point
    elbo_local, steps, converged, curve, ffg_fit = {}, {}, {}, {}, None
    # the FFG first: the flow family's fit starts at the fitted FFG (the encoder's family's own fit records the
    # semi-amortized curve from the encoder, so a flow encoder's flow family runs its own FFG stage)
    for family in sorted(families, key=lambda f: f != "ffg"):
        start = guide if init == "guide" else None
        reuse = family == "flow" and ffg_fit is not None and enc != "flow"
        fit = fit_local_guide(model, x, idx, family, init_guide=ffg_fit.guide if reuse else start,
                              record_steps=record_steps if family == enc else (), progress=progress,
                              **{"seed": seed, **local_kwargs}, **(flow_kwargs if family == "flow" else {}))
        if family == "ffg":
            ffg_fit = fit
        elif reuse:  # the flow's cost and convergence include the FFG stage it started from
            fit.steps, fit.converged = ffg_fit.steps + fit.steps, ffg_fit.converged & fit.converged
        e, i, k = elbo_and_iwae(model, fit.guide, x, idx, eval_samples, progress=progress, desc=f"L[q*_{family}]",
                                seed=seed, purpose=f"L[q*_{family}]")
        elbo_local[family], steps[family], converged[family] = e.per_point, fit.steps, fit.converged
        full[f"iwae_local_{family}"], khats[f"iwae_local_{family}"] = i.per_point, k
        proposals[f"iwae_local_{family}"] = fit.guide
        if family == enc:
            curve = fit.curve
    ais_kwargs = dict(ais_kwargs or {})
    estimates.update(full)
    # log p̂(x): candidates are the mixture of every proposal that can score foreign points (multiple importance
    # sampling), the IWAE of any other proposal, and AIS; for the study, the one that wins an independent pilot
    space = LatentSpace(model, x, idx)
    mixable = [name for name, g in proposals.items() if scores_foreign_points(space, g, x, idx)]
    candidates = {name: g for name, g in proposals.items() if name not in mixable or len(mixable) == 1}
    if len(mixable) > 1:
        mixture, khats["iwae_mixture"] = mixture_iwae(model, [proposals[m] for m in mixable], x, idx, eval_samples,
                                                      seed=seed)
        full = {"iwae_mixture": mixture.per_point, **{k: full[k] for k in candidates}}
        estimates["iwae_mixture"] = mixture.per_point
    else:
        full = {k: full[k] for k in candidates}
    if use_ais:
        full["ais"] = estimates["ais"] = ais_estimator(model, x, idx, progress=progress, seed=seed,
                                                       **ais_kwargs).per_point
    pilot_samples = max(1, round(pilot_fraction * eval_samples))
    pilot = {name: iwae_bound(model, g, x, idx, pilot_samples, seed=seed, purpose=f"pilot_{name}").per_point
             for name, g in candidates.items()}
    if "iwae_mixture" in full:
        pilot["iwae_mixture"] = mixture_iwae(model, [proposals[m] for m in mixable], x, idx, pilot_samples,
                                             seed=seed, purpose="pilot_iwae_mixture")[0].per_point
    if use_ais:
        chains = max(1, round(pilot_fraction * ais_kwargs.get("num_chains", 16)))
        pilot["ais"] = ais_estimator(model, x, idx, seed=seed, purpose="pilot_ais",
                                     **{**ais_kwargs, "num_chains": chains}).per_point
    estimates.update({f"khat_{name}": k.to(elbo_q.per_point.dtype) for name, k in khats.items()})
    info = {"eval_samples": eval_samples, "init": init, "families": families, "log_p_hat_candidates": list(full),
            "mixture_of": mixable if len(mixable) > 1 else [],
            "pilot_fraction": pilot_fraction, "local_fit": {**local_kwargs, **flow_kwargs}, "seed": seed,
            "ais": ais_kwargs if use_ais else None}
    gap = InferenceGap(elbo_q.per_point, elbo_q.per_point, elbo_local, enc, steps, curve, estimates, info, converged,
                       "", {name: pilot[name] for name in full}, idx.detach().cpu())
    _choose_log_p_hat(gap)
    return gap
