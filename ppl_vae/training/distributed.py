"""Data-parallel SVI: ``P`` processes train one model as one process would on the same batches.

Every process iterates the same seeded loader (same shuffling, same dynamic binarization: the *global* batch of
``B`` points) and computes the loss and gradient of its own contiguous block of it: process ``r`` of ``P`` takes the
points ``⌊rB/P⌋ .. ⌊(r+1)B/P⌋ - 1`` (:func:`share`). The gradients are summed over the processes
(``torch.distributed.all_reduce``), each process's loss scaled so that the sum is the gradient of the 1-process loss
of the global batch (:meth:`DataParallelTrainer.step`); every process then takes the same Adam step. The latent
noise of the global batch is drawn on every process from the (identically seeded) global random generator and each
keeps its block (:class:`GlobalBatchNoise`), so the random numbers a point sees are those a single process would
draw for it. The result equals 1-process training on the global batch up to floating-point rounding (the gradient
is summed in another order); the processes' states stay bitwise equal (checked by :func:`check_replicas`).

Why not ``DistributedSampler``: it deals the indices out round-robin (process ``r`` takes ``r, r + P, ...``) and
pads the epoch to a multiple of ``P``, so the points that make up a step, and the number of steps, differ from the
1-process run. Why not ``DistributedDataParallel``: the loss is a Pyro objective over a model and a guide, with
``pyro.param`` tensors outside any ``nn.Module``; one flat ``all_reduce`` of every trained tensor's gradient does
what DDP's buckets do, for all of them.

Decisions are the same on every process: a non-finite loss or gradient stops every process at the same step
(the flags are all-reduced, :func:`~ppl_vae.training.guards.guarded_update`'s ``sync``).
"""
from __future__ import annotations

import hashlib

import pyro
import torch
import torch.distributed as dist
from pyro.distributions import Delta
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch import distributions as td

from ppl_vae.conventions import DATA_PLATE
from ppl_vae.distributed import ProcessGroup, all_gather
from ppl_vae.objectives.base import loss_and_elbo
from ppl_vae.streams import reparameterize

from .guards import TrainingDiverged, check_loss, guarded_update, invalid_values_reason
from .trainer import Trainer

__all__ = ["DataParallelTrainer", "GlobalBatchNoise", "share", "replica_digest", "check_replicas", "ReplicasDiverged"]


def share(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The block ``[start, stop)`` of a global batch of ``batch_size`` points that process ``rank`` computes:
    contiguous blocks in rank order, sizes differing by at most one.

    :param int batch_size: ``B``.
    :param int rank: ``r``.
    :param int world_size: ``P``.
    :returns: ``(⌊rB/P⌋, ⌊(r+1)B/P⌋)``.

    Example::

        >>> [share(7, r, 2) for r in range(2)]
        [(0, 3), (3, 7)]
    """
    return batch_size * rank // world_size, batch_size * (rank + 1) // world_size


class ReplicasDiverged(RuntimeError):
    """The processes of a data-parallel training no longer hold the same state (a non-deterministic reduction or
    device): their results cannot be written as one run."""


class GlobalBatchNoise(Messenger):
    """Draw the latent sites of a block of the global batch as the 1-process run draws them for the whole batch.

    Each latent sample site inside ``pyro.plate("data")`` of a Normal-family distribution (``Normal``,
    ``MultivariateNormal``, flows and other ``TransformedDistribution`` s of them, inside ``Independent`` / masked
    wrappers; distributions with ``rsample_from_noise``) draws the standard-normal noise of the *global* batch from
    torch's global generator, exactly as its ``rsample`` would (same shape, same order), keeps the rows
    ``start .. start + size - 1`` along the data plate, and reparameterizes with them. ``Delta`` sites draw nothing.

    :param int start: the block's first position in the global batch.
    :param int size: the block's number of points (the local batch).
    :param int batch_size: the global batch's number of points.
    :param device: the device the noise is drawn on (the data's).
    :raises ValueError: (when a site is drawn) for a latent site outside the data plate, an observed site outside it
        (counted once per process, not once), or a distribution whose draws cannot be split this way.
    """

    def __init__(self, start: int, size: int, batch_size: int, device=None):
        super().__init__()
        self.start, self.size, self.batch_size = start, size, batch_size
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def _pyro_sample(self, msg) -> None:
        if msg["done"] or isinstance(msg["fn"], _Subsample):
            return
        frames = [f for f in msg["cond_indep_stack"] if f.name == DATA_PLATE]
        if not frames:
            kind = "observed" if msg["is_observed"] else "latent"
            raise ValueError(f"Data-parallel training needs every sample site inside pyro.plate({DATA_PLATE!r}): the "
                             f"{kind} site {msg['name']!r} is outside it, so every process would count it once")
        if msg["is_observed"] or msg["value"] is not None or _draws_nothing(msg["fn"]):
            return
        fn = msg["fn"]
        full = fn.batch_shape + fn.event_shape
        position = len(fn.batch_shape) + frames[0].dim
        if position < 0 or full[position] != self.size:
            raise ValueError(f"Expected site {msg['name']!r} to have {self.size} points along the data plate, got "
                             f"shape {tuple(full)}")
        value = None
        if getattr(fn, "has_rsample", False) and not _expanded(fn):
            dtype = fn.mean.dtype if _has_mean(fn) else torch.get_default_dtype()
            if hasattr(fn, "rsample_from_noise"):
                value = fn.rsample_from_noise(self._noise(full, position, dtype))
            else:
                value = reparameterize(fn, lambda shape: self._noise(shape, position, dtype))
        if value is None:
            raise ValueError(f"Data-parallel training cannot split the draws of site {msg['name']!r} "
                             f"({type(fn).__name__}) over processes: only Normal-family (reparameterized) and Delta "
                             "sites are supported; train it on one process")
        msg["value"] = value
        msg["done"] = True

    def _noise(self, shape, position: int, dtype) -> torch.Tensor:
        shape = list(shape)
        shape[position] = self.batch_size
        noise = torch.empty(shape, dtype=dtype, device=self.device).normal_()  # what rsample draws for the batch
        return noise.narrow(position, self.start, self.size)


def _inner(fn):
    while isinstance(fn, (td.Independent, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def _draws_nothing(fn) -> bool:
    return isinstance(_inner(fn), Delta)


def _expanded(fn) -> bool:
    """An expanded distribution's ``rsample`` lays its draws out by the unexpanded shape: not split here."""
    while isinstance(fn, (td.Independent, MaskedDistribution, td.TransformedDistribution, ExpandedDistribution)):
        if isinstance(fn, ExpandedDistribution):
            return True
        fn = fn.base_dist
    return False


def _has_mean(fn) -> bool:
    try:
        return isinstance(fn.mean, torch.Tensor)
    except NotImplementedError:
        return False


class _GradientSum:
    """``guarded_update``'s ``sync``: sums gradients over the processes, asks whether a flag holds on any."""

    def __init__(self, group: ProcessGroup, device):
        self.group, self.device = group, device

    def gradients(self, params: list[torch.Tensor]) -> None:
        """Sum every parameter's gradient over the processes in place (one flat ``all_reduce``); a parameter
        without a gradient on one process counts as zeros there, and has none only if it has none on every one."""
        if not params:
            return
        dtype = params[0].dtype
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in params]
        has = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=params[0].device)
        flat = torch.cat([*parts, has])
        dist.all_reduce(flat)
        has = flat[-len(params):]
        offset = 0
        for p, present in zip(params, has.tolist()):
            n = p.numel()
            p.grad = flat[offset: offset + n].view_as(p).to(p.dtype).clone() if present else None
            offset += n

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (every process must call it)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


class DataParallelTrainer(Trainer):
    """:class:`~ppl_vae.training.Trainer` on ``P`` processes: :meth:`step` takes the *global* batch, computes this
    process's block of it (:func:`share`) and updates with the gradient of the whole batch (summed over the
    processes), so ``P`` processes train as one process would on the same batches, up to floating-point rounding.

    :param model: Pyro model; every sample site inside ``pyro.plate("data")`` (:class:`GlobalBatchNoise`).
    :param guide: Pyro guide, same signature.
    :param objective: a Pyro ELBO whose loss is a sum over the data points (Pyro's ELBOs, ``IWAE_ELBO``,
        ``AnnealedELBO``; not a loss that couples the points of a batch, such as ``FreeBitsELBO``'s batch-mean KL).
    :param float lr: Adam learning rate.
    :param group: the :class:`~ppl_vae.distributed.ProcessGroup` (every process calls every method together).
    :param modules: further ``nn.Module`` s whose parameters are trained.

    All processes must start from the same parameters and random state (the same seed, or the same checkpoint);
    :func:`check_replicas` checks that they still agree.
    """

    def __init__(self, model, guide, objective, lr: float = 1e-3, group: ProcessGroup | None = None, modules=()):
        super().__init__(model, guide, objective, lr, modules)
        self.group = group if group is not None else ProcessGroup()

    def step(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> float:
        """One gradient step on the global batch ``x (B, ...)`` (the same on every process), of which this process
        computes its block; returns the batch's loss in nats per data point (summed over the processes), and sets
        ``last_elbo``, as :meth:`Trainer.step <ppl_vae.training.Trainer.step>` for the whole batch.

        :raises ValueError: if ``B`` is smaller than the number of processes, or before the first step, if the
            guide's sites do not match the model's.
        :raises TrainingDiverged: on every process, if the loss or a gradient is NaN or infinite on any process (no
            update is applied), or the update overflows the parameters.
        """
        group = self.group
        batch = x.shape[0]
        if batch < group.world_size:
            raise ValueError(f"Expected a batch of at least {group.world_size} points (one per process), got {batch}")
        if idx is None:
            idx = torch.arange(batch, device=x.device)
        start, stop = share(batch, group.rank, group.world_size)
        x_local, idx_local = x[start:stop], idx[start:stop]
        self._ensure_optimizer(x_local, idx_local)
        step = self.steps + 1
        reason = None
        try:
            with GlobalBatchNoise(start, stop - start, batch, x.device):
                loss, negative_elbo = loss_and_elbo(self.objective, self.model, self.guide, x_local, idx_local)
        except ValueError as e:  # with validation on, non-finite distribution parameters fail their constraints
            reason = invalid_values_reason(e)
            if reason is None:
                raise
            loss, negative_elbo = x.new_zeros(()), None
        # the 1-process loss of the batch is the sum of the blocks' losses, each times (block / batch) when the data
        # plate is subsampled (Pyro scales a block by N / block, the batch by N / batch), else times 1
        factor = (stop - start) / batch if self._plate_size else 1.0
        stats = torch.tensor([factor * loss.item(), 0.0 if negative_elbo is None else factor * negative_elbo.item(),
                              float(negative_elbo is None), float(reason is not None)],
                             dtype=torch.float64, device=x.device)
        dist.all_reduce(stats)
        total, total_negative_elbo, without_elbo, failed = stats.tolist()
        if failed:
            raise TrainingDiverged(
                f"The loss became nan at step {step}: a distribution's parameters are not finite "
                f"({reason or 'on another process'}); stopping with the parameters of the last good step (lower the "
                "learning rate or check the data)"
            )
        points = self._plate_size or batch
        check_loss(total, step)  # the same sum on every process: the same decision
        guarded_update(loss * (factor / batch), self.optimizer, step, names=self.names,
                       sync=_GradientSum(group, x.device))
        self.steps = step
        self.last_elbo = None if without_elbo else -total_negative_elbo / points
        return total / points


def replica_digest(*modules, optimizer=None, generators=(), devices=()) -> str:
    """A digest of everything that must be equal on every process of a data-parallel training: the ``modules``'
    state, the ``pyro.param`` store, the optimizer's state, torch's random state (CPU and CUDA ``devices``) and the
    ``generators``' states.

    :returns: a hexadecimal digest.
    """
    h = hashlib.blake2b(digest_size=16)

    def add(value):
        if isinstance(value, torch.Tensor):
            h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
                     if value.numel() else b"")
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                h.update(str(k).encode())
                add(value[k])
        elif isinstance(value, (list, tuple)):
            for v in value:
                add(v)
        else:
            h.update(repr(value).encode())

    for m in modules:
        add(m.state_dict())
    add({name: p.detach() for name, p in pyro.get_param_store().named_parameters()})
    if optimizer is not None:
        add(optimizer.state_dict()["state"])
    add(torch.get_rng_state())
    add([torch.cuda.get_rng_state(d) for d in devices])
    add([g.get_state() for g in generators])
    return h.hexdigest()


def check_replicas(group: ProcessGroup, digest: str, when: str) -> None:
    """Check that every process holds the same state (every process calls it with its :func:`replica_digest`).

    :param group: the :class:`~ppl_vae.distributed.ProcessGroup`.
    :param str digest: this process's digest.
    :param str when: when, for the message (e.g. ``"after epoch 3"``).
    :raises ReplicasDiverged: on every process, if the digests differ.
    """
    digests = all_gather(group, digest)
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise ReplicasDiverged(f"The processes of the data-parallel training hold different states {when} (ranks "
                               f"{differ} differ from rank 0): a non-deterministic reduction; the run keeps its last "
                               "checkpoint")
