"""Stochastic variational inference for any model/guide pair, with Pyro's ELBOs.

The loss is a Pyro ELBO object (``Trace_ELBO``, ``TraceMeanField_ELBO``, ...; or :class:`IWAE_ELBO`) through
its ``differentiable_loss``; the update is one ``torch.optim.Adam`` step over all parameters of the model and
guide — the update of ``pyro.infer.SVI`` with ``pyro.optim.Adam``, but as one optimizer over every tensor with
PyTorch's fused Adam kernel (Pyro's ``PyroOptim`` keeps one optimizer per parameter), whose state is saved
in checkpoints.
Parameters are found as ``nn.Module`` parameters of the model and guide and as ``pyro.param`` sites traced in
the first step, so pairs written either way train. Every update goes through
:func:`~ppl_vae.training.guards.guarded_update`: a step with a non-finite loss or gradient is not applied.

The loss of each step is computed by a :class:`~ppl_vae.compiled.CompiledFunction` of the objective's tensor loss
(:func:`~ppl_vae.training.tensor_losses.tensor_loss_and_elbo`): from the 20th batch of a shape on, the recorded
operations replay without Pyro's handlers, with the traced path's values and gradients bit for bit (so a resumed run
still equals an uninterrupted one). Objectives without a tensor loss (``AnnealedELBO``, ``TraceGraph_ELBO``, ...)
train on the traced path, as does every step whose guards see the pair's structure change.
"""
from __future__ import annotations

import math
import time

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ppl_vae.compiled import CompiledFunction, pair_state, pair_tensors
from ppl_vae.conventions import DATA_PLATE, check_pair
from ppl_vae.objectives.base import ELBO_OBJECTIVES, loss_and_elbo, preserved_randomness

from .guards import TrainingDiverged, guarded_update, invalid_values_reason
from .tensor_losses import tensor_loss_and_elbo

__all__ = ["Trainer", "ELBO_OBJECTIVES"]  # TrainingDiverged: ppl_vae.training.guards (re-exported by ppl_vae.training)



class _DataPlateSize(Messenger):
    """Records the full size ``N`` of the ``data`` plate seen during a pass (``N`` even when it is subsampled)."""

    def __init__(self):
        super().__init__()
        self.size: int | None = None

    def _pyro_post_sample(self, msg) -> None:
        if self.size is None:
            for frame in msg["cond_indep_stack"]:
                if frame.name == DATA_PLATE and frame.full_size:
                    self.size = int(frame.full_size)


class Trainer:
    """SVI on ``model(x, idx)`` / ``guide(x, idx)`` with the Pyro ELBO ``objective``.

    :param model: Pyro model (function or ``nn.Module``).
    :param guide: Pyro guide, same signature.
    :param objective: an object with ``differentiable_loss(model, guide, x, idx)`` (Pyro's ELBOs have it); the
        objectives of :mod:`ppl_vae.objectives` also give the true ELBO of each step
        (``differentiable_loss_and_elbo``).
    :param float lr: Adam learning rate.
    :param modules: further ``nn.Module`` s whose parameters are trained (e.g. the module behind a model wrapped
        by ``config_enumerate``).

    Losses and ELBOs are reported in nats per data point: the batch loss divided by the number of points it
    stands for, ``N`` for a subsampled ``pyro.plate("data", N, subsample=idx)`` (Pyro scales the batch sum by
    ``N / B``), else the batch size.
    """

    def __init__(self, model, guide, objective, lr: float = 1e-3, modules=()):
        self.model, self.guide, self.objective, self.lr = model, guide, objective, lr
        self.modules = list(modules)
        self.optimizer: torch.optim.Optimizer | None = None
        self.names: dict[int, str] = {}
        self.history: dict[str, list] = {"epoch": [], "train_elbo": [], "train_objective": [], "valid_elbo": [],
                                         "seconds": []}
        self.steps = 0
        self.last_elbo: float | None = None
        self._plate_size: int | None = None
        self._compiled: CompiledFunction | None = None

    def parameters(self, x, idx) -> list[torch.Tensor]:
        """Every trainable tensor of the pair, found without moving the random streams (sets :attr:`names`, and notes
        whether the data plate is subsampled, i.e. how many points a loss stands for)."""
        params, names = {}, {}
        for label, fn in (("model", self.model), ("guide", self.guide), *((f"modules[{i}]", m) for i, m in enumerate(self.modules))):
            if isinstance(fn, torch.nn.Module):
                for name, p in fn.named_parameters():
                    if p.requires_grad:
                        params[id(p)] = p
                        names.setdefault(id(p), f"{label}.{name}")
        plate = _DataPlateSize()
        with preserved_randomness(), poutine.trace(param_only=True) as capture, plate:
            self.objective.differentiable_loss(self.model, self.guide, x, idx)
        # a subsampled data plate (its full size is not the batch's): losses stand for all its points
        self._plate_size = plate.size if plate.size not in (None, x.shape[0]) else None
        for name, site in capture.trace.nodes.items():
            p = site["value"].unconstrained()
            if p.requires_grad:
                params[id(p)] = p
                names.setdefault(id(p), f"pyro.param {name!r}")
        self.names = names
        return list(params.values())

    def _ensure_optimizer(self, x, idx):
        if self.optimizer is None:
            # the pair is checked once, before the first step (Pyro's SVI only warns about unmatched sites), without
            # moving the random streams (a resumed run must draw what an uninterrupted one draws)
            with preserved_randomness():
                check_pair(self.model, self.guide, x, idx)
            params = self.parameters(x, idx)
            if not params:
                raise ValueError(
                    "Found no trainable parameters: the model and guide are neither nn.Modules with parameters nor "
                    "functions calling pyro.param / pyro.module"
                )
            self.optimizer = adam(params, self.lr)
            tensor_loss = tensor_loss_and_elbo(self.objective)
            if tensor_loss is not None:
                objective, model, guide = self.objective, self.model, self.guide
                self._compiled = CompiledFunction(
                    lambda x, idx: tensor_loss(objective, model, guide, x, idx),
                    lambda: pair_tensors(model, guide, modules=self.modules), name=f"{type(objective).__name__} loss",
                    state=lambda: pair_state(model, guide, objective, modules=self.modules))

    def step(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> float:
        """One gradient step on a batch ``x (B, ...)``; returns the batch's loss of the trained objective in nats per
        data point (the negative ELBO for Pyro's ELBOs). ``last_elbo`` is then the batch's ELBO estimate in
        nats per data point (``None`` if the objective does not give one).

        :raises ValueError: before the first step, if the guide's sites do not match the model's latent sites
            (:func:`~ppl_vae.conventions.check_pair`).
        :raises TrainingDiverged: if the loss or a gradient is NaN or infinite (no update is applied), or the update
            overflows the parameters.
        """
        self._ensure_optimizer(x, idx)
        step = self.steps + 1
        try:
            if self._compiled is not None:
                loss, negative_elbo = self._compiled(x, idx)
            else:
                loss, negative_elbo = loss_and_elbo(self.objective, self.model, self.guide, x, idx)
        except ValueError as e:  # with validation on, non-finite distribution parameters fail their constraints
            reason = invalid_values_reason(e)
            if reason is None:
                raise
            raise TrainingDiverged(
                f"The loss became nan at step {step}: a distribution's parameters are not finite ({reason}); stopping "
                "with the parameters of the last good step (lower the learning rate or check the data)"
            ) from e
        points = self._plate_size or x.shape[0]
        guarded_update(loss / x.shape[0], self.optimizer, step, names=self.names)
        self.steps = step
        self.last_elbo = None if negative_elbo is None else -negative_elbo.item() / points
        return loss.item() / points

    def train_epoch(self, loader, progress=None) -> dict[str, float | None]:
        """One pass over ``loader`` of ``(x, y, idx)`` batches.

        :returns: ``{"train_objective": ..., "train_elbo": ...}``: the means over the epoch's batches (weighted by
            their sizes, at the parameters of each step) of minus the trained objective's loss and of the ELBO, in
            nats per data point; ``train_elbo`` is ``None`` if the objective gives no ELBO.
        """
        objective = elbo = 0.0
        count, has_elbo = 0, True
        for x, _, idx in loader:
            objective -= self.step(x, idx) * x.shape[0]
            if self.last_elbo is None:
                has_elbo = False
            else:
                elbo += self.last_elbo * x.shape[0]
            count += x.shape[0]
            if progress is not None:
                progress.update(1)
                progress.set_postfix(elbo=f"{elbo / count:.2f}" if has_elbo else "n/a")
        count = max(count, 1)
        return {"train_objective": objective / count, "train_elbo": elbo / count if has_elbo else None}

    def state_dict(self) -> dict:
        """Everything a resumed training needs, as tensors and plain types: the Adam state, the step count, the
        ``pyro.param`` values (unconstrained) and the objective's own state (e.g. a KL schedule's step)."""
        store = pyro.get_param_store()
        objective = self.objective.state_dict() if hasattr(self.objective, "state_dict") else None
        return {"optimizer": None if self.optimizer is None else self.optimizer.state_dict(), "steps": self.steps,
                "pyro_params": {name: p.detach().clone() for name, p in store.named_parameters()},
                "objective": objective}

    def load_state_dict(self, state: dict, x, idx) -> None:
        """Restore :meth:`state_dict`'s state; ``x, idx``: a batch to discover the parameters with (drawing no
        random numbers).

        :raises ValueError: if a saved ``pyro.param`` is not one of the pair's, or the objective's state is missing.
        """
        self._ensure_optimizer(x, idx)
        store = dict(pyro.get_param_store().named_parameters())
        unknown = sorted(set(state["pyro_params"]) - set(store))
        if unknown:
            raise ValueError(f"Expected the saved pyro.params {unknown} among the pair's, found {sorted(store)}")
        with torch.no_grad():
            for name, value in state["pyro_params"].items():
                store[name].copy_(value)
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if hasattr(self.objective, "load_state_dict"):
            if state.get("objective") is None:
                raise ValueError(f"Expected a saved state for the objective {self.objective!r}, found none")
            self.objective.load_state_dict(state["objective"])
        self.steps = state["steps"]


def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where the parameters allow it (3x faster steps on CPU than the default)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # e.g. parameters on a device without a fused kernel
        return torch.optim.Adam(params, lr=lr)


def record(history: dict, epoch: int, seconds: float, **values) -> None:
    """Append one epoch to ``history``: ``epoch``, ``seconds`` and ``values`` (a NaN or infinite value as ``None``)."""
    for key, value in (("epoch", epoch), *values.items(), ("seconds", seconds)):
        history.setdefault(key, []).append(value if not isinstance(value, float) or math.isfinite(value) else None)


def timer():
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
