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

import torch
from pyro.ops.integrator import potential_grad, velocity_verlet
from tqdm.auto import tqdm

from ppl_vae.conventions import max_plate_nesting

from .chunks import DEFAULT_MAX_ROWS, chunk_sizes, point_chunks
from .estimate import Estimate
from .log_weights import guide_log_prob, joint_terms, sample_guide, sample_prior

__all__ = ["ais", "annealing_schedule"]


def annealing_schedule(num_steps: int, kind: str = "sigmoid", sharpness: float = 4.0,
                       beta_min: float = 1e-4) -> torch.Tensor:
    """``(num_steps + 1,)`` inverse temperatures from 0 to 1.

    ``"sigmoid"`` (default): Grosse et al. (2015)'s schedule, denser near both ends. ``"geometric"``: 0, then
    ``num_steps`` values log-uniform from ``beta_min`` to 1 (equal ratios of successive temperatures).
    ``"linear"``: equally spaced.
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


def ais(
    model, x: torch.Tensor, idx: torch.Tensor | None = None, guide=None, num_chains: int = 16,
    num_steps: int = 500, leapfrog_steps: int = 10, step_size: float = 0.05, target_accept: float = 0.65,
    schedule: str = "sigmoid", max_rows: int = DEFAULT_MAX_ROWS, progress: bool = False,
    adapt_step_size: bool = True,
) -> Estimate:
    """AIS estimate of ``log p(x_n)`` per data point.

    :param x: ``(N, ...)`` data. :param idx: ``(N,)`` or ``None``.
    :param guide: start from this guide's ``q(z|x)`` instead of the prior (fewer steps needed).
    :param int num_chains: independent chains per data point. :param int num_steps: intermediate distributions.
    :param int leapfrog_steps: leapfrog steps per HMC transition. :param float step_size: initial step size
        (adapted per data point towards ``target_accept`` unless ``adapt_step_size=False``).
    :param int max_rows: bound on ``chains x points`` advanced together.
    :returns: :class:`Estimate` (``per_point (N,)``); ``info`` has the mean acceptance rate.

    Continuous latent sites only (HMC). Cost: ``num_steps * (leapfrog_steps + 1)`` gradient evaluations of the
    model per chain.
    """
    if num_chains < 1 or leapfrog_steps < 1:
        raise ValueError(f"Expected num_chains >= 1 and leapfrog_steps >= 1, got {num_chains}, {leapfrog_steps}")
    betas = annealing_schedule(num_steps, schedule).tolist()
    if idx is None:
        idx = torch.arange(x.shape[0], device=x.device)
    nesting = max_plate_nesting(model, guide if guide is not None else model, x[:1], idx[:1])
    points, _ = chunk_sizes(num_chains, x.shape[0], max_rows)
    chunks = list(point_chunks(x, idx, points))
    bar = None
    if progress:
        bar = tqdm(total=len(chunks) * num_steps, desc="AIS", unit="step")
    out, rates = [], []
    for xc, ic in chunks:
        lw, rate, _ = _ais_chunk(model, guide, xc, ic, num_chains, betas, leapfrog_steps, step_size,
                                 target_accept if adapt_step_size else None, nesting, bar)
        out.append(lw.logsumexp(0) - math.log(num_chains))
        rates.append(rate)
    if bar is not None:
        bar.close()
    name = f"ais_{num_steps}" + ("_from_guide" if guide is not None else "")
    info = {"num_chains": num_chains, "num_steps": num_steps, "leapfrog_steps": leapfrog_steps,
            "schedule": schedule, "start": "guide" if guide is not None else "prior",
            "accept_rate": sum(rates) / len(rates)}
    return Estimate(name, torch.cat(out), info)


def _ais_chunk(model, guide, x, idx, num_chains, betas, leapfrog_steps, step_size, target_accept, nesting, bar):
    n = x.shape[0]
    with torch.no_grad():
        if guide is None:
            latents, _ = sample_prior(model, x, idx, num_chains, nesting)
        else:
            latents, _ = sample_guide(guide, x, idx, num_chains, nesting)
    shapes = {k: v.shape for k, v in latents.items()}
    # flatten every site to (C, N, numel) so one per-chain step size broadcasts over all of them
    z = {k: v.detach().reshape(num_chains, n, -1) for k, v in latents.items()}

    def terms(z_flat):
        unflat = {k: v.reshape(shapes[k]) for k, v in z_flat.items()}
        log_prior, log_lik = joint_terms(model, x, idx, unflat, nesting)
        log_q0 = log_prior if guide is None else guide_log_prob(guide, x, idx, unflat, nesting)
        return log_q0, log_prior + log_lik - log_q0  # log q0(z), log p(x, z) - log q0(z)

    state = {}

    def potential(z_flat, beta):
        log_q0, delta = terms(z_flat)
        state["log_q0"], state["delta"] = log_q0.detach(), delta.detach()
        return -(log_q0 + beta * delta).sum()

    with torch.no_grad():
        _, delta = terms(z)
    log_w = torch.zeros(num_chains, n, dtype=x.dtype, device=x.device)
    eps = torch.full((1, n, 1), step_size, dtype=x.dtype, device=x.device)
    accepted = torch.zeros((), dtype=x.dtype, device=x.device)
    for t in range(1, len(betas)):
        beta = betas[t]
        log_w = log_w + (beta - betas[t - 1]) * delta
        fn = lambda zz, b=beta: potential(zz, b)  # noqa: E731
        grads, _ = potential_grad(fn, z)
        energy0 = -(state["log_q0"] + beta * state["delta"])
        r = {k: torch.randn_like(v) for k, v in z.items()}
        kinetic0 = sum(0.5 * v.pow(2).sum(-1) for v in r.values())
        z_new, r_new, _, _ = velocity_verlet(z, r, fn, lambda rr: rr, eps, leapfrog_steps, grads)
        energy1 = -(state["log_q0"] + beta * state["delta"])
        kinetic1 = sum(0.5 * v.pow(2).sum(-1) for v in r_new.values())
        log_accept = (energy0 + kinetic0 - energy1 - kinetic1).clamp(max=0.0)
        log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
        accept = torch.rand_like(log_accept).log() < log_accept
        with torch.no_grad():
            z = {k: torch.where(accept[..., None], z_new[k], z[k]).detach() for k in z}
            delta = torch.where(accept, state["delta"], delta)
            # adapt each chain's step size towards the target acceptance probability
            # adapt each data point's step size (shared by its chains) towards the target acceptance rate;
            # per-chain adaptation would bias each chain's stationary distribution
            if target_accept is not None:
                rate = log_accept.exp().mean(0, keepdim=True)
                eps = eps * torch.where(rate > target_accept, 1.02, 0.98)[..., None]
            accepted = accepted + accept.to(x.dtype).mean()
        if bar is not None:
            bar.update(1)
    final = {k: v.reshape(shapes[k]) for k, v in z.items()}
    return log_w.detach(), (accepted / (len(betas) - 1)).item(), final
