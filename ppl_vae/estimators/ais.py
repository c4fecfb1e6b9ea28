"""Annealed importance sampling (Neal 2001) of log p(x), per data point, with HMC transitions.

Intermediate targets are geometric averages between a tractable start ``q0`` (the prior, or a guide) and the
unnormalized posterior: :math:`f_\\beta(z) = q_0(z)^{1-\\beta} p(x, z)^\\beta`, for
:math:`0 = \\beta_0 < \\beta_1 < \\dots < \\beta_T = 1`. Each chain carries the log weight
:math:`\\sum_t (\\beta_t - \\beta_{t-1}) [\\log p(x, z_{t-1}) - \\log q_0(z_{t-1})]`, and
:math:`\\log\\frac1C\\sum_c e^{\\log w_c}` estimates :math:`\\log p(x)` (a stochastic lower bound in
expectation). This is the evaluation of decoder-based models of Wu et al. (2017), used by Cremer et al. (2018).

Every (chain, data point) pair is an independent HMC chain, all advanced together in one vectorized pass;
the leapfrog integrator is Pyro's :func:`pyro.ops.integrator.velocity_verlet`; each chain's step size adapts
towards a target acceptance rate (one step size per data point, shared by its chains).

References:

1. Neal, R. M. (2001). Annealed importance sampling. Statistics and Computing 11.
2. Wu, Y., Burda, Y., Salakhutdinov, R., Grosse, R. (2017). On the quantitative analysis of decoder-based
   generative models. ICLR.
3. Grosse, R., Ghahramani, Z., Adams, R. P. (2015). Sandwiching the marginal likelihood using bidirectional Monte
   Carlo (the sigmoid schedule).
"""
from __future__ import annotations

import math
import numbers

import pyro
import torch
from pyro.ops.integrator import potential_grad, velocity_verlet
from tqdm.auto import tqdm

from ppl_vae.conventions import default_idx
from ppl_vae.data.errors import check_finite
from ppl_vae.latent_space import LatentSpace
from ppl_vae.streams import PointStreams, point_streams, sampling_from

from .chunks import DEFAULT_MAX_ROWS, chunk_sizes, point_chunks, samples_last
from .estimate import Estimate
from .log_weights import prepare_pair

__all__ = ["ais", "anneal", "annealing_schedule", "check_hmc_options"]


def annealing_schedule(num_steps: int, kind: str = "sigmoid", sharpness: float = 4.0,
                       beta_min: float = 1e-4) -> torch.Tensor:
    """``(num_steps + 1,)`` inverse temperatures from 0 to 1.

    ``"sigmoid"`` (default): Grosse et al. (2015)'s schedule, denser near both ends. ``"geometric"``: 0, then
    ``num_steps`` values log-uniform from ``beta_min`` to 1 (equal ratios of successive temperatures).
    ``"linear"``: equally spaced.

    :raises ValueError: if ``num_steps < 1`` or the schedule is unknown.
    """
    if num_steps < 1:
        raise ValueError(f"Expected num_steps >= 1, got {num_steps}")
    t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    if kind == "linear":
        return t
    if kind == "geometric":
        return torch.cat([t.new_zeros(1), torch.logspace(math.log10(beta_min), 0, num_steps, dtype=torch.float64)])
    if kind == "sigmoid":
        s = torch.sigmoid(sharpness * (2 * t - 1))
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f"Unknown schedule {kind!r}; expected 'geometric', 'sigmoid' or 'linear'")


def check_hmc_options(*, step_size: float, target_accept: float | None, **counts: int) -> None:
    """Refuse AIS / BDMC settings that cannot run as asked: counts (``num_chains``, ``num_steps``, ...) that are not
    integers >= 1, a step size that is not a finite positive number, a target acceptance rate outside ``(0, 1)``.

    :raises ValueError: naming the first bad option.
    """
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"Expected {name} to be an integer >= 1, got {value!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) or not math.isfinite(step_size) \
            or step_size <= 0:
        raise ValueError(f"Expected step_size to be a finite number > 0, got {step_size!r}")
    if target_accept is not None and (isinstance(target_accept, bool) or not isinstance(target_accept, numbers.Real)
                                      or not 0 < target_accept < 1):
        raise ValueError(f"Expected target_accept in (0, 1) or None, got {target_accept!r}")


def ais(
    model, x: torch.Tensor, idx: torch.Tensor | None = None, guide=None, num_chains: int = 16,
    num_steps: int = 500, leapfrog_steps: int = 10, step_size: float = 0.05, target_accept: float = 0.65,
    schedule: str = "sigmoid", max_rows: int = DEFAULT_MAX_ROWS, progress: bool = False,
    adapt_step_size: bool = True, seed: int | None = None, purpose: str = "ais",
) -> Estimate:
    """AIS estimate of ``log p(x_n)`` per data point, run in the model's unconstrained latent space
    (:class:`~ppl_vae.latent_space.LatentSpace`): constrained supports, several sites, any event shapes, models that
    use ``idx``; discrete sites marked for enumeration are summed out.

    :param x: ``(N, ...)`` data.
    :param idx: ``(N,)`` indices of the points (handed to the model and guide) or ``None``.
    :param guide: start from this guide's ``q(z|x)`` instead of the prior (fewer steps needed); it must be able to
        score points it did not sample (not planar or radial flows).
    :param int num_chains: independent chains per data point.
    :param int num_steps: intermediate distributions.
    :param int leapfrog_steps: leapfrog steps per HMC transition.
    :param float step_size: initial step size (adapted per data point towards ``target_accept`` unless
        ``adapt_step_size=False``).
    :param str schedule: ``"sigmoid"``, ``"geometric"`` or ``"linear"`` (:func:`annealing_schedule`).
    :param int max_rows: bound on ``chains x points`` advanced together.
    :param seed: draw each point's starting values, momenta and acceptance decisions from its own stream, seeded from
        ``(seed, idx[n], purpose)`` (:mod:`ppl_vae.streams`): a point's estimate is then the same whatever other
        points share the call; ``None`` draws from the global random generator.
    :param str purpose: names the streams.
    :returns: :class:`Estimate` (``per_point (N,)`` nats); ``info`` has the settings, each point's acceptance rate
        (``accept_rate_per_point``, ``(N,)`` float64) and their mean (``accept_rate``).
    :raises DataError: if ``x`` holds NaN or infinite values (while Pyro's validation is enabled).
    :raises ValueError: for discrete latent sites that are not enumerated, a guide that cannot score foreign points, or
        settings out of range (:func:`check_hmc_options`).

    Cost: ``num_steps * (leapfrog_steps + 1)`` gradient evaluations of the model per chain.
    """
    check_hmc_options(num_chains=num_chains, num_steps=num_steps, leapfrog_steps=leapfrog_steps, step_size=step_size,
                      target_accept=target_accept, max_rows=max_rows)
    betas = annealing_schedule(num_steps, schedule).tolist()
    check_finite(x)
    idx = default_idx(x, idx)
    space = LatentSpace(model, x, idx)
    space.require_continuous("AIS")
    nesting = space.nesting
    if guide is not None:
        _, nesting = prepare_pair(model, guide, x, idx)
        _check_scores_foreign_points(space, guide, x[:1], idx[:1], nesting)
    points, _ = chunk_sizes(num_chains, x.shape[0], max_rows)
    chunks = list(point_chunks(x, idx, points))
    bar = tqdm(total=len(chunks) * num_steps, desc="AIS", unit="step") if progress else None
    out, rates = [], []
    for xc, ic in chunks:
        streams = point_streams(seed, ic, purpose, x.device)
        with torch.no_grad(), sampling_from(streams):
            u0 = space.sample_prior(xc, ic, num_chains) if guide is None else \
                space.sample_guide(guide, xc, ic, num_chains, nesting)[0]
        start = _Start(space, guide, xc, ic, nesting)
        lw, rate, _ = anneal(start, u0, betas, leapfrog_steps, step_size, target_accept if adapt_step_size else None,
                             bar, streams=streams, rate_per_point=True)
        out.append(samples_last(lw).logsumexp(-1) - math.log(num_chains))
        rates.append(rate)
    if bar is not None:
        bar.close()
    name = f"ais_{num_steps}" + ("_from_guide" if guide is not None else "")
    rates = torch.cat(rates)
    info = {"num_chains": num_chains, "num_steps": num_steps, "leapfrog_steps": leapfrog_steps,
            "schedule": schedule, "start": "guide" if guide is not None else "prior",
            "accept_rate": rates.mean().item(), "accept_rate_per_point": rates}
    return Estimate(name, torch.cat(out), info)


def _check_scores_foreign_points(space, guide, x, idx, nesting) -> None:
    """Refuse, up front, a guide that cannot evaluate its density at points it did not sample."""
    with torch.no_grad():
        u, _ = space.sample_guide(guide, x, idx, 1, nesting)
        space.guide_log_density(guide, x, idx, u + 0.01, nesting)


class _Start:
    """The annealing's end points in u-space: ``log q0(u)`` (prior or guide) and ``log p(x, u) - log q0(u)``."""

    def __init__(self, space, guide, x, idx, nesting):
        self.space, self.guide, self.x, self.idx, self.nesting = space, guide, x, idx, nesting

    def __call__(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # without argument validation: a leapfrog step can leave the region where the model's parameters are valid
        # (a scale that underflows to 0); its energy is then not finite and the move is rejected, as in Pyro's HMC
        with pyro.validation_enabled(False):
            log_prior, log_lik = self.space.log_joint(self.x, self.idx, u)
            if self.guide is None:
                return log_prior, log_lik
            log_q0 = self.space.guide_log_density(self.guide, self.x, self.idx, u, self.nesting)
        return log_q0, log_prior + log_lik - log_q0


def anneal(terms, u: torch.Tensor, betas: list[float], leapfrog_steps: int, step_size: float,
           target_accept: float | None, bar=None, *, streams: PointStreams | None = None,
           rate_per_point: bool = False) -> tuple[torch.Tensor, float | torch.Tensor, torch.Tensor]:
    """Run the chains ``u (C, N, D)`` through the inverse temperatures ``betas`` with one HMC transition per
    temperature, targeting :math:`q_0(u)^{1-\\beta} p(x, u)^\\beta`.

    :param terms: ``u -> (log q0(u), log p(x, u) - log q0(u))``, each ``(C, N)``, differentiable.
    :param betas: the schedule; increasing from 0 to 1 gives forward AIS, decreasing from 1 to 0 the reverse chain of
        bidirectional Monte Carlo.
    :param streams: the ``N`` points' random streams (:class:`~ppl_vae.streams.PointStreams`) for the momenta and
        the acceptance decisions, or ``None``: the global random generator.
    :param bool rate_per_point: return each point's acceptance rate ``(N,)`` (float64) instead of their mean.
    :returns: ``(log weights (C, N), mean acceptance rate, final u)``; the log weight of a chain is
        :math:`\\sum_t (\\beta_t - \\beta_{t-1}) [\\log p(x, u_{t-1}) - \\log q_0(u_{t-1})]`.
    """
    c, n = u.shape[:2]
    state = {}

    def potential(z, beta):
        log_q0, delta = terms(z["u"])
        state["log_q0"], state["delta"] = log_q0.detach(), delta.detach()
        return -(log_q0 + beta * delta).sum()

    z = {"u": u.detach()}
    with torch.no_grad():
        _, delta = terms(z["u"])
    log_w = torch.zeros(c, n, dtype=u.dtype, device=u.device)
    eps = torch.full((1, n, 1), step_size, dtype=u.dtype, device=u.device)
    accepted = torch.zeros(n, dtype=torch.float64, device=u.device)
    for t in range(1, len(betas)):
        beta = betas[t]
        log_w = log_w + (beta - betas[t - 1]) * delta
        fn = lambda zz, b=beta: potential(zz, b)  # noqa: E731
        grads, _ = potential_grad(fn, z)
        energy0 = -(state["log_q0"] + beta * state["delta"])
        r = {"u": torch.randn_like(z["u"]) if streams is None else
             streams.normal((c, u.shape[-1]), dim=1, dtype=u.dtype).to(u.device)}
        kinetic0 = 0.5 * r["u"].pow(2).sum(-1)
        z_new, r_new, _, _ = velocity_verlet(z, r, fn, lambda rr: rr, eps, leapfrog_steps, grads)
        energy1 = -(state["log_q0"] + beta * state["delta"])
        kinetic1 = 0.5 * r_new["u"].pow(2).sum(-1)
        log_accept = (energy0 + kinetic0 - energy1 - kinetic1).clamp(max=0.0)
        log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
        uniform = torch.rand_like(log_accept) if streams is None else \
            streams.uniform((c,), dim=1, dtype=log_accept.dtype).to(u.device)
        accept = uniform.log() < log_accept
        with torch.no_grad():
            z = {"u": torch.where(accept[..., None], z_new["u"], z["u"]).detach()}
            delta = torch.where(accept, state["delta"], delta)
            # adapt each data point's step size (shared by its chains) towards the target acceptance rate;
            # per-chain adaptation would bias each chain's stationary distribution
            if target_accept is not None:
                rate = samples_last(log_accept.exp()).mean(-1).unsqueeze(0)
                eps = eps * torch.where(rate > target_accept, 1.02, 0.98)[..., None]
            accepted += samples_last(accept.to(torch.float64)).mean(-1)
        if bar is not None:
            bar.update(1)
    rate = accepted / max(len(betas) - 1, 1)
    return log_w.detach(), rate if rate_per_point else rate.mean().item(), z["u"]
