"""What the objectives of this package share: Pyro's :class:`~pyro.infer.ELBO` interface, and the true ELBO of the
same pass reported next to the trained objective.

Each objective is a :class:`pyro.infer.ELBO`, so it works wherever Pyro's own do:

- ``pyro.infer.SVI(model, guide, optim, objective).step(x)`` (through :meth:`ObjectiveELBO.loss_and_grads`);
- ``objective(model, guide)`` returns a :class:`pyro.infer.elbo.ELBOModule` (an ``nn.Module`` whose ``forward``
  is ``differentiable_loss``; the route Pyro uses with PyTorch optimizers and PyTorch Lightning);
- ``differentiable_loss`` (a scalar tensor to back-propagate) and ``loss`` (a float, no gradient).

Losses are, like Pyro's, sums over the batch that estimate the sum over the whole data set: a subsampled
``pyro.plate("data", N, subsample=idx)`` scales them by ``N / B``.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO

from ppl_vae.conventions import DATA_PLATE, max_plate_nesting

__all__ = ["ELBO_OBJECTIVES", "ObjectiveELBO", "data_plate_scale", "loss_and_elbo", "plate_nesting", "preserved_randomness",
           "reparameterized_sites"]

ELBO_OBJECTIVES = (Trace_ELBO, TraceGraph_ELBO, TraceEnum_ELBO)
"""Pyro objectives whose loss *is* the negative ELBO (``TraceMeanField_ELBO`` and the JIT variants derive from them)."""


class ObjectiveELBO(ELBO):
    """Base of :class:`~ppl_vae.objectives.IWAE_ELBO`, :class:`~ppl_vae.objectives.FreeBitsELBO` and
    :class:`~ppl_vae.objectives.AnnealedELBO`: subclasses define :meth:`differentiable_loss_and_elbo`."""

    def differentiable_loss_and_elbo(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, negative_elbo)``: the trained objective's differentiable loss, and the negative ELBO estimate of
        the same batch (a detached scalar tensor, same units and scaling), from the same samples where possible.

        :returns: two scalar tensors, nats summed over the batch.
        """
        raise NotImplementedError

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The trained objective as a differentiable scalar (a batch sum, as Pyro's ELBOs)."""
        return self.differentiable_loss_and_elbo(model, guide, *args, **kwargs)[0]

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Back-propagate ``differentiable_loss`` (what :class:`pyro.infer.SVI` calls); returns its value.

        :returns: the trained objective's loss, a float (nats summed over the batch).
        """
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} traces the model and guide itself, vectorized over particles")


def data_plate_scale(trace) -> float:
    """``N / B`` of a subsampled ``pyro.plate("data", N, subsample=...)`` of ``B`` points, ``1.0`` if the data plate
    is not subsampled (or absent): how much a batch sum stands for."""
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.name == DATA_PLATE and frame.full_size is not None and frame.size:
                return float(frame.full_size) / float(frame.size)
    return 1.0


def reparameterized_sites(guide_trace) -> dict[str, bool]:
    """``{site: has_rsample}`` for every latent sample site of ``guide_trace``."""
    return {name: bool(getattr(site["fn"], "has_rsample", False)) for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]}


@contextmanager
def preserved_randomness() -> Iterator[None]:
    """Put torch's random state (CPU and every initialized CUDA device) back at the end of the block to where it was
    at its start: what the block draws does not move the streams of the code around it (a traced discovery pass
    must not, or a resumed run would draw differently from an uninterrupted one), and the code after the block
    draws the same numbers the block did."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    cpu, states = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        for d, s in zip(devices, states):
            torch.cuda.set_rng_state(s, d)


def plate_nesting(model, guide, *args) -> int:
    """:func:`ppl_vae.conventions.max_plate_nesting`, traced without moving the random streams."""
    with preserved_randomness():
        return max_plate_nesting(model, guide, *args)


def loss_and_elbo(objective, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(differentiable loss, negative ELBO or None)`` of any objective: ours give both
    (:meth:`ObjectiveELBO.differentiable_loss_and_elbo`); for Pyro's ELBOs (:data:`ELBO_OBJECTIVES`) the loss is
    the negative ELBO; for anything else (``RenyiELBO``, ...) there is no ELBO to report (``None``)."""
    if hasattr(objective, "differentiable_loss_and_elbo"):
        return objective.differentiable_loss_and_elbo(model, guide, *args, **kwargs)
    loss = objective.differentiable_loss(model, guide, *args, **kwargs)
    return loss, (loss.detach() if isinstance(objective, ELBO_OBJECTIVES) else None)
