"""KL annealing and β weighting: scale the latent terms of the ELBO and leave the likelihood alone.

.. math:: \\mathcal{L}_\\beta(x) = \\mathbb{E}_{q(z|x)}[\\log p(x|z)]
          - \\beta\\, \\mathrm{KL}\\big(q(z|x) \\,\\|\\, p(z)\\big)

:class:`LatentScale` is a Pyro messenger that multiplies the ``scale`` of every *non-observed* sample site by
``beta``. Wrapping both the model and the guide in it scales :math:`\\log p(z)` and :math:`\\log q(z|x)` — the
KL term, whether Pyro estimates it by sampling (``Trace_ELBO``) or in closed form (``TraceMeanField_ELBO``
multiplies the analytic KL by the guide site's scale) — and leaves :math:`\\log p(x|z)` unscaled.
Unlike :func:`pyro.poutine.scale`, ``beta = 0`` is allowed: it leaves the reconstruction term alone.

Schedules map a training step to β: :func:`linear_warmup` (Bowman et al. 2016; Sønderby et al. 2016),
:func:`cyclical` (Fu et al. 2019), :func:`constant` (the β-VAE of Higgins et al. 2017).
:class:`AnnealedELBO` turns any Pyro ELBO into a training objective whose β follows a schedule.

References:

1. Bowman, Vilnis, Vinyals, Dai, Jozefowicz, Bengio (2016), *Generating Sentences from a Continuous Space*.
2. Sønderby, Raiko, Maaløe, Sønderby, Winther (2016), *Ladder Variational Autoencoders*.
3. Higgins et al. (2017), *β-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework*.
4. Fu, Li, Liu, Gao, Celikyilmaz, Carin (2019), *Cyclical Annealing Schedule: A Simple Approach to Mitigating
   KL Vanishing*.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.poutine.messenger import Messenger

from .base import ObjectiveELBO, loss_and_elbo, preserved_randomness
from .iwae import IWAE_ELBO

__all__ = ["LatentScale", "scale_latents", "linear_warmup", "cyclical", "constant", "AnnealedELBO"]


def _check_beta(beta, name: str = "beta") -> None:
    value = beta.detach() if isinstance(beta, torch.Tensor) else torch.as_tensor(float(beta))
    if not (torch.isfinite(value).all() and (value >= 0).all()):
        raise ValueError(f"Expected {name} to be finite and >= 0, got {beta}")


class LatentScale(Messenger):
    """Multiply the ``scale`` of every non-observed sample site by ``beta``; observed sites are untouched.

    A site counts as observed if it is observed when the message reaches this messenger: a
    :func:`pyro.poutine.condition` applied *inside* it turns a latent into an observation (not scaled), one
    applied outside it does not.

    :param beta: a float or tensor ``>= 0`` (a tensor broadcasts against each site's batch shape).

    Example::

        >>> import torch
        >>> from pyro.infer import TraceMeanField_ELBO
        >>> from ppl_vae.models import LinearGaussian
        >>> from ppl_vae.objectives import LatentScale
        >>> model = LinearGaussian(x_dim=5, z_dim=2)
        >>> x, guide = model.marginal().sample((4,)), model.exact_posterior_guide
        >>> full = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
        >>> with LatentScale(0.5):                    # or scale_latents(0.5, model)
        ...     half = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
        >>> bool(half < full)                         # the KL term (positive in the loss) halved
        True
    """

    def __init__(self, beta: float | torch.Tensor):
        _check_beta(beta)
        super().__init__()
        self.beta = beta

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.beta * msg["scale"]


def scale_latents(beta: float | torch.Tensor, fn: Callable | None = None):
    """``LatentScale(beta)``, or ``fn`` wrapped in it when ``fn`` is given (as Pyro's ``poutine`` handlers)."""
    messenger = LatentScale(beta)
    return messenger if fn is None else messenger(fn)


def _check_step(step: int) -> None:
    if step < 0:
        raise ValueError(f"Expected step >= 0, got {step}")


def linear_warmup(step: int, warmup_steps: int, beta_max: float = 1.0) -> float:
    """KL warm-up: β rises linearly from 0 at step 0 to ``beta_max`` at ``warmup_steps``, then stays there.

    .. math:: \\beta_t = \\beta_{\\max} \\min(1, t / T_{\\text{warm-up}})

    ``warmup_steps = 0`` gives ``beta_max`` from the start.

    :raises ValueError: if ``warmup_steps < 0``.
    """
    _check_step(step)
    if warmup_steps < 0:
        raise ValueError(f"Expected warmup_steps >= 0, got {warmup_steps}")
    _check_beta(beta_max, "beta_max")
    if warmup_steps == 0:
        return float(beta_max)
    return float(beta_max) * min(1.0, step / warmup_steps)


def cyclical(step: int, cycle_steps: int, ratio: float = 0.5, beta_max: float = 1.0) -> float:
    """Cyclical annealing (Fu et al. 2019): each cycle of ``cycle_steps`` steps ramps β linearly from 0 to
    ``beta_max`` over its first ``ratio`` fraction, then holds ``beta_max`` until the next cycle starts at 0.

    .. math:: \\tau = \\frac{t \\bmod C}{C}, \\qquad \\beta_t = \\beta_{\\max} \\min(1, \\tau / R)

    :raises ValueError: if ``cycle_steps < 1`` or ``ratio`` is not in (0, 1].
    """
    _check_step(step)
    if cycle_steps < 1:
        raise ValueError(f"Expected cycle_steps >= 1, got {cycle_steps}")
    if not 0 < ratio <= 1:
        raise ValueError(f"Expected ratio in (0, 1], got {ratio}")
    _check_beta(beta_max, "beta_max")
    tau = (step % cycle_steps) / cycle_steps
    return float(beta_max) * min(1.0, tau / ratio)


def constant(step: int, beta: float = 1.0) -> float:
    """The β-VAE's fixed weight (Higgins et al. 2017): ``beta`` at every step (``beta > 1`` trades
    reconstruction for a more factorized code; ``beta = 1`` is the ELBO)."""
    _check_step(step)
    _check_beta(beta)
    return float(beta)


class AnnealedELBO(ObjectiveELBO):
    """A Pyro ELBO whose KL term is weighted by β from a schedule: the training objective
    :math:`-\\sum_n \\mathcal{L}_{\\beta_t}(x_n)` at training step :math:`t`. A :class:`pyro.infer.ELBO`
    (``differentiable_loss``, ``loss``, ``loss_and_grads``, ``AnnealedELBO(...)(model, guide)`` → ``ELBOModule``).

    The step counter counts *gradient steps*: with ``auto_advance=True`` (default) it advances by one each time a
    loss returned by :meth:`differentiable_loss` is back-propagated (a hook on the returned tensor). So
    :class:`ppl_vae.training.trainer.Trainer` and :class:`pyro.infer.SVI` move the schedule once per step, and
    calls that are not followed by ``backward()`` (the trainer's parameter discovery, evaluations) leave it where
    it is. With ``auto_advance=False``, call :meth:`advance` yourself. The counter is training state:
    :meth:`state_dict` / :meth:`load_state_dict` save and restore it (checkpoints do).

    :param elbo: a Pyro ELBO whose loss honours site scales (``Trace_ELBO``, ``TraceMeanField_ELBO``,
        ``TraceGraph_ELBO``, :class:`~ppl_vae.objectives.FreeBitsELBO`, ...).
    :param schedule: a function ``step -> beta`` (e.g. ``functools.partial(linear_warmup, warmup_steps=1000)``)
        or a number (a constant β).
    :param bool auto_advance: advance the step counter on every backward pass.
    :raises ValueError: if ``elbo`` is an :class:`~ppl_vae.objectives.IWAE_ELBO` (its importance weights are
        unscaled: a β would be silently ignored) or a constant schedule is negative or not finite.

    Example::

        >>> from functools import partial
        >>> import torch
        >>> from pyro.infer import TraceMeanField_ELBO
        >>> from ppl_vae.guides import AmortizedNormal
        >>> from ppl_vae.models import BernoulliVAE
        >>> from ppl_vae.objectives import AnnealedELBO, linear_warmup
        >>> from ppl_vae.training import Trainer
        >>> model, x = BernoulliVAE(z_dim=4, hidden=(16,)), torch.rand(8, 784).bernoulli()
        >>> guide = AmortizedNormal.for_model(model, x, hidden=(16,))
        >>> objective = AnnealedELBO(TraceMeanField_ELBO(), partial(linear_warmup, warmup_steps=2000))
        >>> trainer = Trainer(model, guide, objective, lr=1e-3)
        >>> for step in range(3):
        ...     loss = trainer.step(x)
        >>> objective.beta                    # rising to 1 over 2000 steps
        0.0015
    """

    def __init__(self, elbo, schedule: Callable[[int], float] | float, auto_advance: bool = True):
        if isinstance(elbo, IWAE_ELBO):
            raise ValueError(
                "Expected an ELBO that honours site scales, but got IWAE_ELBO: its per-point importance weights are "
                "not scaled, so a KL weight beta would be ignored; train IWAE_ELBO without AnnealedELBO"
            )
        if not callable(schedule):
            _check_beta(schedule, "schedule")
            value = float(schedule)
            schedule = lambda step: value  # noqa: E731
        super().__init__(num_particles=getattr(elbo, "num_particles", 1))
        self.elbo, self.schedule, self.auto_advance = elbo, schedule, auto_advance
        self.step = 0

    @property
    def beta(self) -> float:
        """β at the current step, ``schedule(step)``."""
        beta = self.schedule(self.step)
        _check_beta(beta, f"schedule({self.step})")
        return beta

    def advance(self, steps: int = 1) -> None:
        """Move the schedule on by ``steps`` training steps.

        :raises ValueError: if ``steps < 0``.
        """
        if steps < 0:
            raise ValueError(f"Expected steps >= 0, got {steps}")
        self.step += steps

    def state_dict(self) -> dict:
        """``{"step": int}``: the schedule's position (plain types, for checkpoints)."""
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Restore the schedule's position saved by :meth:`state_dict`.

        :raises ValueError: if ``state["step"]`` is not an integer ``>= 0``.
        """
        step = state.get("step") if isinstance(state, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"Expected a state {{'step': int >= 0}}, got {state!r}")
        self.step = step

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The β-weighted negative ELBO of the batch (a scalar to back-propagate), with β = :attr:`beta`."""
        return self._hooked(self.elbo.differentiable_loss(scale_latents(self.beta, model), scale_latents(self.beta, guide),
                                                          *args, **kwargs))

    def _hooked(self, loss):
        if self.auto_advance and isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.register_hook(self._on_backward)
        return loss

    def differentiable_loss_and_elbo(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(β-weighted loss, -ELBO)``: the wrapped objective's negative ELBO at β = 1 (for a
        :class:`~ppl_vae.objectives.FreeBitsELBO`, its true, un-floored one), computed with the *same* random draws as
        the loss (the random state is replayed, then put back) and without gradient; ``None`` if the wrapped
        objective gives no ELBO."""
        beta = self.beta
        if beta == 1:
            loss, negative_elbo = loss_and_elbo(self.elbo, model, guide, *args, **kwargs)
            return self._hooked(loss), negative_elbo
        with preserved_randomness():  # the next block draws the same numbers
            loss, _ = loss_and_elbo(self.elbo, scale_latents(beta, model), scale_latents(beta, guide), *args, **kwargs)
        with torch.no_grad():
            _, negative_elbo = loss_and_elbo(self.elbo, model, guide, *args, **kwargs)
        return self._hooked(loss), negative_elbo

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.advance()

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        """The true (β = 1) negative ELBO estimate of the wrapped ELBO, as a float: what is reported, not trained."""
        loss = self.elbo.loss(model, guide, *args, **kwargs)
        return loss.item() if isinstance(loss, torch.Tensor) else float(loss)

    def __repr__(self) -> str:
        return f"AnnealedELBO({type(self.elbo).__name__}, step={self.step}, beta={float(self.beta):.4g})"
