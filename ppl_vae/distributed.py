"""Several processes, one job: the process group that ``torchrun`` sets up, as PyTorch documents it.

``torchrun --nproc_per_node=P -m ppl_vae.cli <command> ...`` starts ``P`` copies of the command with the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
(:mod:`torch.distributed.run`); :func:`process_group` joins them into a :mod:`torch.distributed` process group —
``gloo`` on CPUs, ``nccl`` with one GPU per process (``cuda:LOCAL_RANK``) — and says which share of the work is
this process's. Without ``torchrun`` it is a group of one process and changes nothing.

The gap and evaluate jobs split the points over the ranks and gather the results on rank 0
(:func:`gather_to_first`), which writes the report; data-parallel training is in
:mod:`ppl_vae.training.distributed`.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["ProcessGroup", "process_group", "launched_by_torchrun", "gather_to_first", "all_gather", "agree",
           "broadcast_from_first", "on_first"]

logger = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets ``RANK`` and
    ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the processes of one job.

    :ivar int rank: ``0 .. world_size - 1``; rank 0 writes the job's files.
    :ivar int world_size: the number of processes.
    :ivar int local_rank: the rank among the processes of this machine (the GPU it uses).
    :ivar str device: the device this process computes on (``cuda:LOCAL_RANK`` for ``--device cuda``).
    :ivar objects: the ``gloo`` group that carries Python objects between the processes (``None`` for one process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    objects: object = None

    @property
    def is_first(self) -> bool:
        """Whether this is rank 0, the process that writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there are several processes."""
        return self.world_size > 1


def _int_env(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"Expected the environment variable {name} (set by torchrun) to be an integer, got "
                         f"{value!r}") from None


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[ProcessGroup]:
    """Join the processes ``torchrun`` started (nothing to join without it) and leave the group on exit.

    :param str device: the job's ``--device``: ``cpu`` (backend ``gloo``) or ``cuda`` (backend ``nccl``, process
        ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``); under ``torchrun`` a numbered ``cuda:N`` is refused (each process
        takes the GPU of its local rank).
    :returns: a context manager yielding the :class:`ProcessGroup`.
    :raises ValueError: for ``cuda:N`` or ``mps`` under several processes, or a ``cuda`` device this machine lacks.
    """
    if not launched_by_torchrun():
        yield ProcessGroup(device=device)
        return
    rank, world, local = _int_env("RANK"), _int_env("WORLD_SIZE"), _int_env("LOCAL_RANK")
    if world == 1:
        yield ProcessGroup(0, 1, local, device)
        return
    if device.startswith("cuda:") or device == "mps":
        raise ValueError(f"Expected --device cpu or cuda under torchrun (each process uses cuda:LOCAL_RANK), got "
                         f"--device {device}")
    if device == "cuda":
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise ValueError(f"--device cuda under torchrun needs a GPU per process: local rank {local} on a machine "
                             f"with {torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA device(s)")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    group = None
    try:
        objects = dist.new_group(backend="gloo") if device.startswith("cuda") else dist.group.WORLD
        logger.debug("rank %d of %d on %s", rank, world, device)
        group = ProcessGroup(rank, world, local, device, objects)
        yield group
        dist.barrier(group=objects)  # every process done with its collectives before any leaves (not after an error)
    finally:
        dist.destroy_process_group()
        if group is not None:  # no reference keeps gloo's threads alive until the interpreter shuts down
            object.__setattr__(group, "objects", None)
        objects = None
        gc.collect()


def gather_to_first(group: ProcessGroup, obj) -> list | None:
    """Every process's ``obj`` on rank 0, in rank order (``None`` on the other ranks); every rank must call it.

    :param group: the :class:`ProcessGroup`.
    :param obj: a picklable object (keep tensors on the CPU).
    :returns: ``[obj of rank 0, obj of rank 1, ...]`` on rank 0, else ``None``.
    """
    if not group.distributed:
        return [obj]
    out = [None] * group.world_size if group.is_first else None
    dist.gather_object(obj, out, dst=0, group=group.objects)
    return out


def all_gather(group: ProcessGroup, obj) -> list:
    """Every process's ``obj`` on every process, in rank order; every rank must call it.

    :param group: the :class:`ProcessGroup`.
    :param obj: a picklable object (keep tensors on the CPU).
    :returns: ``[obj of rank 0, obj of rank 1, ...]``.
    """
    if not group.distributed:
        return [obj]
    out = [None] * group.world_size
    dist.all_gather_object(out, obj, group=group.objects)
    return out


def broadcast_from_first(group: ProcessGroup, obj=None):
    """Rank 0's ``obj`` on every process (the others' ``obj`` is ignored); every rank must call it.

    :param group: the :class:`ProcessGroup`.
    :param obj: a picklable object on rank 0.
    :returns: rank 0's ``obj``.
    """
    if not group.distributed:
        return obj
    box = [obj if group.is_first else None]
    dist.broadcast_object_list(box, src=0, group=group.objects)
    return box[0]


def agree(group: ProcessGroup, error: BaseException | None) -> None:
    """Stop every process if one failed: every rank calls it with the exception it caught (or ``None``), and every
    rank raises the lowest failing rank's exception (its own, if it failed itself), so no process waits for ever
    for one that has stopped.

    :param group: the :class:`ProcessGroup`.
    :param error: this process's exception, or ``None``.
    :raises Exception: the failing rank's exception, on every rank, if any rank failed.
    """
    errors = all_gather(group, _picklable(error)) if group.distributed else [error]
    _raise_any(error, *errors)


def on_first(group: ProcessGroup, work) -> None:
    """``work()`` on rank 0 (the process that writes) while the others wait; its exception, if any, is raised on
    every process.

    :param group: the :class:`ProcessGroup`.
    :param work: a function of no arguments.
    :raises Exception: what ``work`` raised on rank 0, on every rank.
    """
    failure = None
    if group.is_first:
        try:
            work()
        except Exception as e:
            failure = e
    if group.distributed:
        shared = broadcast_from_first(group, _picklable(failure))
        failure = failure if group.is_first else shared
    _raise_any(failure)


def _raise_any(*errors: BaseException | None) -> None:
    """Raise the first of ``errors`` that is not ``None`` (this process's own first: it has its traceback)."""
    for error in errors:
        if error is not None:
            raise error


def _picklable(error: BaseException | None) -> BaseException | None:
    """``error`` if it survives pickling (to travel to the other processes), else a ``RuntimeError`` with its
    message."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
