"""The inference gap and its decomposition (Cremer, Li & Duvenaud 2018), for any model/guide pair.

.. math::
    \\underbrace{\\log p(x) - \\mathcal{L}[q]}_{\\text{inference gap}}
    = \\underbrace{\\log p(x) - \\mathcal{L}[q^*]}_{\\text{approximation gap}}
    + \\underbrace{\\mathcal{L}[q^*] - \\mathcal{L}[q]}_{\\text{amortization gap}}

``q`` is the amortized guide, ``q*`` the best guide of a family for each data point separately (fitted by
:func:`ppl_vae.gap.local_fit.fit_local_guide` with the model frozen), and ``log p(x)`` is replaced by
:math:`\\log\\hat p(x)`, per point the best of the strong estimators: IWAE-K with the amortized guide and with
every ``q*`` whose Pareto k̂ is below :func:`~ppl_vae.estimators.psis.khat_threshold` as proposals, and AIS
when asked. Final bounds are evaluated with many samples (``eval_samples``),
never with the noisy optimization objective.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import torch

from ppl_vae.estimators import ais as ais_estimator
from ppl_vae.estimators import elbo_and_iwae, khat_threshold
from ppl_vae.gap.local_fit import fit_local_guide
from ppl_vae.guides import AmortizedFlow

__all__ = ["InferenceGap", "inference_gap", "encoder_family", "FAMILY_NAMES"]

FAMILY_NAMES = {"ffg": "FFG", "flow": "Flow", "mvn": "Full-cov"}


def encoder_family(guide) -> str:
    """The per-datapoint family that matches an amortized guide: ``"flow"`` for flow encoders, else ``"ffg"``."""
    return "flow" if isinstance(guide, AmortizedFlow) else "ffg"


def _mean_se(t: torch.Tensor) -> tuple[float, float]:
    n = t.numel()
    return t.mean().item(), (t.std().item() / math.sqrt(n) if n > 1 else 0.0)


@dataclass
class InferenceGap:
    """Per-point bounds of ``N`` data points (nats) and the gaps derived from them.

    ``log_p_hat (N,)``; ``elbo_amortized (N,)`` = L[q]; ``elbo_local[family] (N,)`` = L[q*_family];
    ``encoder_family``: the family whose gaps are the headline; ``steps[family] (N,)``: optimization steps;
    ``curve``: ``{k: (N,)}`` ELBO after ``k`` refinement steps from the encoder (encoder family).
    """

    log_p_hat: torch.Tensor
    elbo_amortized: torch.Tensor
    elbo_local: dict[str, torch.Tensor]
    encoder_family: str
    steps: dict[str, torch.Tensor] = field(default_factory=dict)
    curve: dict[int, torch.Tensor] = field(default_factory=dict)
    estimates: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def approximation_gap(self, family: str | None = None) -> torch.Tensor:
        """``log p̂(x) - L[q*]`` per point ``(N,)``."""
        return self.log_p_hat - self.elbo_local[family or self.encoder_family]

    def amortization_gap(self, family: str | None = None) -> torch.Tensor:
        """``L[q*] - L[q]`` per point ``(N,)``."""
        return self.elbo_local[family or self.encoder_family] - self.elbo_amortized

    def inference_gap(self) -> torch.Tensor:
        """``log p̂(x) - L[q]`` per point ``(N,)``."""
        return self.log_p_hat - self.elbo_amortized

    def rows(self) -> list[tuple[str, float, float]]:
        """``(row name, mean, standard error)`` in the layout of Cremer et al. (2018)'s Table 2; the approximation
        and amortization gaps are those of the encoder's family (:attr:`encoder_family`)."""
        out = [("log p̂(x)", *_mean_se(self.log_p_hat))]
        for family in ("flow", "mvn", "ffg"):
            if family in self.elbo_local:
                out.append((f"L[q*_{FAMILY_NAMES[family]}]", *_mean_se(self.elbo_local[family])))
        out.append(("L[q]", *_mean_se(self.elbo_amortized)))
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
               "semi_amortized_curve": {str(k): _mean_se(v)[0] for k, v in self.curve.items()}}
        if per_point:
            out["per_point"] = {"log_p_hat": t(self.log_p_hat), "elbo_amortized": t(self.elbo_amortized),
                                **{f"elbo_local_{k}": t(v) for k, v in self.elbo_local.items()},
                                **{k: t(v) for k, v in self.estimates.items()}}
        return out


def inference_gap(
    model, guide, x: torch.Tensor, idx: torch.Tensor | None = None, families=("ffg", "flow"),
    eval_samples: int = 5000, init: str = "guide", use_ais: bool = False, ais_kwargs: dict | None = None,
    record_steps=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), local_kwargs: dict | None = None,
    seed: int = 0, progress: bool = False,
) -> InferenceGap:
    """Measure L[q], L[q*] for each family, log p̂(x), and the gaps, on the points ``x (N, ...)``.

    :param guide: the amortized guide (``idx`` is passed to it too).
    :param families: per-datapoint families to fit (``"ffg"``, ``"flow"``, ``"mvn"``); the encoder's family
        (:func:`encoder_family`) is always included.
    :param int eval_samples: samples per point for every final bound (ELBOs and IWAE).
    :param str init: ``"guide"`` starts every ``q*`` at the amortized guide's output, ``"prior"`` at ``N(0, I)``.
    :param bool use_ais: include AIS (from the prior) in log p̂(x); ``ais_kwargs`` go to :func:`ais`.
    :param record_steps: steps at which the semi-amortized curve (encoder family, from the encoder) is recorded.
    :param dict local_kwargs: options of :func:`fit_local_guide` (``max_steps``, ``lr``, ``num_samples``...).
    """
    if init not in ("guide", "prior"):
        raise ValueError(f"Expected init 'guide' or 'prior', got {init!r}")
    local_kwargs = dict(local_kwargs or {})
    if idx is None:
        idx = torch.arange(x.shape[0], device=x.device)
    enc = encoder_family(guide)
    families = list(dict.fromkeys([enc, *families]))
    pyro.set_rng_seed(seed)
    estimates = {}
    elbo_q, iwae_q, khat_q = elbo_and_iwae(model, guide, x, idx, eval_samples, progress=progress, desc="L[q]")
    estimates["iwae_amortized"] = iwae_q.per_point
    khats = {"iwae_amortized": khat_q}
    elbo_local, steps, curve = {}, {}, {}
    for family in families:
        fit = fit_local_guide(model, x, family, init_guide=guide if init == "guide" else None,
                              record_steps=record_steps if family == enc else (), progress=progress,
                              **local_kwargs)
        local_idx = torch.arange(x.shape[0], device=x.device)
        e, i, k = elbo_and_iwae(model, fit.guide, x, local_idx, eval_samples, progress=progress,
                                desc=f"L[q*_{family}]")
        elbo_local[family], steps[family] = e.per_point, fit.steps
        estimates[f"iwae_local_{family}"] = i.per_point
        khats[f"iwae_local_{family}"] = k
        if family == enc:
            curve = fit.curve
    if use_ais:
        estimates["ais"] = ais_estimator(model, x, idx, progress=progress, **(ais_kwargs or {})).per_point
    # log p̂(x): per point, the best of IWAE with the encoder (as Cremer et al.), AIS, and IWAE with each q* as
    # proposal where its Pareto k̂ says the importance weights are reliable (a heavy-tailed proposal's IWAE can
    # land far above log p(x), and a max over estimates would keep exactly that)
    candidates = []
    for name, values in estimates.items():
        if name.startswith("iwae_local_"):
            values = torch.where(khats[name] < khat_threshold(eval_samples), values, torch.full_like(values, -math.inf))
        candidates.append(values)
    log_p_hat = torch.stack(candidates).max(0).values
    estimates.update({f"khat_{name}": k.to(log_p_hat.dtype) for name, k in khats.items()})
    info = {"eval_samples": eval_samples, "init": init, "families": families,
            "log_p_hat_from": [n for n in estimates if not n.startswith("khat_")],
            "local_fit": local_kwargs, "seed": seed}
    return InferenceGap(log_p_hat, elbo_q.per_point, elbo_local, enc, steps, curve, estimates, info)
