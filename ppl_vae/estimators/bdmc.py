"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015): log p(x) sandwiched between two stochastic bounds,
on data simulated from the model.

For a point :math:`(z, x)` drawn from the model, :math:`z` is an exact sample of the posterior :math:`p(z | x)`.
Forward AIS (from the prior, or a guide, to the posterior) gives :math:`\\hat p(x)` with
:math:`\\mathbb{E}[\\hat p(x)] = p(x)`: :math:`\\log \\hat p(x)` is a stochastic *lower* bound. The same chain run
backwards — started at the exact posterior sample, annealed from the posterior to the start distribution — gives
:math:`\\hat w` with :math:`\\mathbb{E}[\\hat w] = 1 / p(x)`: :math:`-\\log \\hat w` is a stochastic *upper* bound.
The true :math:`\\log p(x)` lies between them (in expectation, and with high probability as the chains lengthen),
and the width of the sandwich bounds the error of forward AIS at that schedule — on simulated data; Wu et al.
(2017) use it to choose the AIS settings they then trust on real data.

Both directions use :func:`ppl_vae.estimators.ais.anneal` (HMC transitions, one step size per point adapted
towards a target acceptance rate) in the model's unconstrained latent space
(:class:`~ppl_vae.latent_space.LatentSpace`), with the reverse schedule of the forward one.

References:

1. Grosse, R., Ghahramani, Z., Adams, R. P. (2015). Sandwiching the marginal likelihood using bidirectional Monte
   Carlo. arXiv:1511.02543.
2. Wu, Y., Burda, Y., Salakhutdinov, R., Grosse, R. (2017). On the quantitative analysis of decoder-based
   generative models. ICLR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from pyro import poutine
from tqdm.auto import tqdm

from ppl_vae.conventions import default_idx
from ppl_vae.latent_space import LatentSpace
from ppl_vae.traces import sample_sites, trace_particles

from .ais import _check_scores_foreign_points, _Start, anneal, annealing_schedule, check_hmc_options
from .chunks import DEFAULT_MAX_ROWS, chunk_sizes
from .estimate import Estimate
from .log_weights import prepare_pair

__all__ = ["BDMC", "bdmc", "simulate"]


@dataclass
class BDMC:
    """Both bounds of bidirectional Monte Carlo, per simulated point.

    :ivar lower: forward AIS, :math:`\\log \\hat p(x)`: ``per_point (N,)`` nats, a stochastic lower bound.
    :ivar upper: reverse AIS from the exact posterior sample: ``per_point (N,)`` nats, a stochastic upper bound.
    :ivar x: ``(N, ...)`` the simulated data the bounds are of (``None`` when read back from a report, which does not
        keep it).
    :ivar info: settings and acceptance rates.
    """

    lower: Estimate
    upper: Estimate
    x: torch.Tensor | None
    info: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> BDMC:
        """The bounds :meth:`to_dict` wrote with their per-point values (the simulated data is not kept).

        :param dict data: :meth:`to_dict`'s output, ``per_point=True``.
        :returns: the sandwich, with ``x=None``.
        :raises ValueError: if ``data`` lacks either bound or their per-point values.
        """
        if not isinstance(data, dict) or "lower" not in data or "upper" not in data:
            raise ValueError(f"Expected a BDMC report with 'lower' and 'upper', got {type(data).__name__}")
        info = {k: v for k, v in data.items() if k not in ("data", "lower", "upper", "gap")}
        return cls(Estimate.from_dict(data["lower"]), Estimate.from_dict(data["upper"]), None, info)

    @property
    def gap(self) -> torch.Tensor:
        """``upper - lower`` per point ``(N,)``: how far forward AIS may be from log p(x) at this schedule."""
        return self.upper.per_point - self.lower.per_point

    def to_dict(self, per_point: bool = True) -> dict:
        """Both estimates, the gap's mean and standard error, and the settings.

        :param bool per_point: include every point's values.
        :returns: a JSON-serializable dict.
        """
        g = self.gap
        se = g.std().item() / math.sqrt(g.numel()) if g.numel() > 1 else 0.0
        return {"data": f"{g.numel()} points simulated from the model (not observed data)", **self.info,
                "lower": self.lower.to_dict(per_point), "upper": self.upper.to_dict(per_point),
                "gap": {"mean": g.mean().item(), "stderr": se}}


def _observed_site(trace, x: torch.Tensor) -> str:
    """The one observed site whose value is ``x`` itself."""
    observed = [(name, s) for name, s in sample_sites(trace) if s["is_observed"]]
    matches = [name for name, s in observed if s["value"] is x or
               (isinstance(s["value"], torch.Tensor) and s["value"].shape[-x.dim():] == x.shape
                and torch.equal(s["value"].reshape(-1, *x.shape)[0], x))]
    if len(matches) != 1:
        raise ValueError(f"Expected the model to observe the data x at exactly one sample site (to simulate data from "
                         f"it), got observed sites {[n for n, _ in observed]} of which {matches} observe x")
    return matches[0]


@torch.no_grad()
def simulate(model, x: torch.Tensor, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``(z, x)`` from the model for ``N`` points shaped like ``x`` (with the points' indices ``idx``).

    :param x: ``(N, ...)`` template data: the simulated points take their shape, dtype and indices.
    :param idx: ``(N,)`` the points' indices (handed to the model) or ``None``.
    :returns: ``(x_sim (N, ...), u (N, D))``: the simulated data and the latents that generated them in the model's
        unconstrained latent space — an exact sample of each point's posterior.
    :raises ValueError: if the model does not observe ``x`` at exactly one site, conditions on any other observed site
        (``pyro.factor``, other data: the prior draw of ``z`` would not be a posterior sample), or has discrete latents
        that are not enumerated.
    """
    idx = default_idx(x, idx)
    space = LatentSpace(model, x, idx)
    space.require_continuous("Bidirectional Monte Carlo")
    conditioned = trace_particles(model, x, idx, 1, space.nesting)
    site = _observed_site(conditioned, x)
    others = [name for name, s in sample_sites(conditioned) if s["is_observed"] and name != site]
    if others:
        # poutine.uncondition would draw these too: the simulated z would not be a posterior sample of p(z | x, ...)
        raise ValueError(f"Bidirectional Monte Carlo simulates (z, x) from the model's prior, but the model conditions "
                         f"on observed sites other than the data x: {others} (pyro.factor, or obs= of other data); "
                         "simulate the data yourself and pass exact posterior samples as posterior_u")
    trace = trace_particles(poutine.uncondition(model), x, idx, 1, space.nesting)
    value = trace.nodes[site]["value"]
    x_sim = value.reshape(x.shape).to(x.dtype)
    u, _ = space.unconstrain({b.name: trace.nodes[b.name]["value"] for b in space.blocks})
    return x_sim, u[0]


def bdmc(
    model, x: torch.Tensor, idx: torch.Tensor | None = None, posterior_u: torch.Tensor | None = None, *,
    guide=None, num_chains: int = 16, num_steps: int = 500, leapfrog_steps: int = 10, step_size: float = 0.05,
    target_accept: float = 0.65, schedule: str = "sigmoid", max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = False,
) -> BDMC:
    """Sandwich ``log p(x_n)`` between forward AIS and reverse AIS from an exact posterior sample, per point.

    :param x: ``(N, ...)``: with ``posterior_u=None``, template points — ``N`` points are simulated from the model
        (:func:`simulate`) in their shape and with their indices; else simulated data whose generating latents are
        ``posterior_u``.
    :param idx: ``(N,)`` the points' indices or ``None``.
    :param posterior_u: ``(N, D)`` exact posterior samples of ``x`` in the latent space (the latents that generated
        them), or ``None`` to simulate.
    :param guide: start the forward chain from this guide (and end the reverse chain there) instead of the prior; it
        must score points it did not sample.
    :param int num_chains: chains per point and direction (the reverse chains all start at the point's one exact
        sample).
    :param int num_steps: intermediate distributions of each direction.
    :param int leapfrog_steps: leapfrog steps per HMC transition.
    :param float step_size: initial step size, adapted per point towards ``target_accept``.
    :param target_accept: the target acceptance rate of the adaptation, or ``None`` for a fixed step size.
    :param str schedule: ``"sigmoid"``, ``"geometric"`` or ``"linear"`` (:func:`~ppl_vae.estimators.annealing_schedule`);
        the reverse chain runs it backwards.
    :param int max_rows: bound on ``chains x points`` advanced together.
    :returns: :class:`BDMC`.
    :raises ValueError: for settings out of range (:func:`~ppl_vae.estimators.ais.check_hmc_options`),
        ``posterior_u`` of the wrong shape, a model that does not observe ``x`` at one site or observes other sites
        (when simulating), discrete latents that are not enumerated, or a guide that cannot score foreign
        points.

    Cost: twice that of :func:`~ppl_vae.estimators.ais` with the same settings.
    """
    check_hmc_options(num_chains=num_chains, num_steps=num_steps, leapfrog_steps=leapfrog_steps, step_size=step_size,
                      target_accept=target_accept, max_rows=max_rows)
    betas = annealing_schedule(num_steps, schedule).tolist()
    idx = default_idx(x, idx)
    space = LatentSpace(model, x, idx)
    space.require_continuous("Bidirectional Monte Carlo")
    if posterior_u is None:
        x, posterior_u = simulate(model, x, idx)
    if posterior_u.shape != (x.shape[0], space.dim):
        raise ValueError(f"Expected posterior_u of shape ({x.shape[0]}, {space.dim}) (points, latent dimension), got "
                         f"{tuple(posterior_u.shape)}")
    nesting = space.nesting
    if guide is not None:
        _, nesting = prepare_pair(model, guide, x, idx)
        _check_scores_foreign_points(space, guide, x[:1], idx[:1], nesting)
    points, _ = chunk_sizes(num_chains, x.shape[0], max_rows)
    bar = tqdm(total=2 * num_steps * math.ceil(x.shape[0] / points), desc="BDMC", unit="step", disable=not progress)
    lower, upper, rates = [], [], {"forward": [], "reverse": []}
    for a in range(0, x.shape[0], points):
        xc, ic, uc = x[a:a + points], idx[a:a + points], posterior_u[a:a + points]
        start = _Start(space, guide, xc, ic, nesting)
        with torch.no_grad():
            u0 = space.sample_prior(xc, ic, num_chains) if guide is None else \
                space.sample_guide(guide, xc, ic, num_chains, nesting)[0]
        lw, rate, _ = anneal(start, u0, betas, leapfrog_steps, step_size, target_accept, bar)
        lower.append(lw.logsumexp(0) - math.log(num_chains))
        rates["forward"].append(rate)
        # reverse: from the exact posterior sample at beta = 1 down to the start distribution; the log weights
        # estimate log(1 / p(x)), so minus their log-mean-exp is an upper bound of log p(x)
        lw, rate, _ = anneal(start, uc.expand(num_chains, *uc.shape).clone(), betas[::-1], leapfrog_steps, step_size,
                             target_accept, bar)
        upper.append(-(lw.logsumexp(0) - math.log(num_chains)))
        rates["reverse"].append(rate)
    bar.close()
    info = {"num_chains": num_chains, "num_steps": num_steps, "leapfrog_steps": leapfrog_steps, "schedule": schedule,
            "start": "guide" if guide is not None else "prior",
            "accept_rate": {k: sum(v) / len(v) for k, v in rates.items()}}
    name = f"_{num_steps}" + ("_from_guide" if guide is not None else "")
    return BDMC(Estimate("bdmc_forward" + name, torch.cat(lower), dict(info)),
                Estimate("bdmc_reverse" + name, torch.cat(upper), dict(info)), x, info)
