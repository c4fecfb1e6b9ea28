"""Run directories: train a configured model/guide pair, checkpoint it, load it back.

A run directory holds ``config.json``, ``checkpoint.pt`` (model, guide, optimizer and objective state, history,
every random stream; written atomically after every epoch), ``history.json``, the marker and lock ``.ppl_vae-run``
(:mod:`ppl_vae.runs.directory`), ``checkpoints/epoch_XXXX.pt`` with ``keep_every``, and, after
``evaluate``/``plot``, ``evaluation_<split>.json`` and ``figures/``.

What a training guarantees (each is tested, and ``benchmarks/fault_injection.py`` kills trainings to check them):

- a resumed run equals an uninterrupted one bitwise, for every option: all training state is in the checkpoint
  (Adam moments, the KL schedule's step, ``pyro.param`` values, the adversarial optimizers, every random stream),
  and the random streams are restored after everything that draws while setting up;
- ``resume`` refuses a configuration that changes anything but :data:`~ppl_vae.runs.config.RESUMABLE`, naming
  the options; ``config.json`` always describes the run as trained;
- no step with a non-finite loss or gradient is applied and no non-finite state is written: the last good
  checkpoint stays;
- every file is written atomically; ``history.json`` is written before the checkpoint it describes, so it never
  lags it (after a kill it may hold one uncommitted epoch, which ``resume`` recomputes identically).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ppl_vae.conventions import check_pair
from ppl_vae.data import Splits, check_images, load_splits, make_loader
from ppl_vae.diagnostics.collapse import active_units, kl_per_dimension
from ppl_vae.distributed import ProcessGroup, agree, broadcast_from_first, on_first, process_group
from ppl_vae.estimators import elbo
from ppl_vae.objectives.base import preserved_randomness
from ppl_vae.runs.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    checkpoint_bytes,
    load_checkpoint,
    nonfinite_entries,
    rng_state,
    set_rng_state,
)
from ppl_vae.runs.config import (
    AMORTIZED_GUIDES,
    RESUMABLE,
    TrainConfig,
    build_guide,
    build_model,
    build_objective,
    describe_objective,
)
from ppl_vae.runs.directory import RunLock
from ppl_vae.runs.zoo import build_trainer
from ppl_vae.training.distributed import DataParallelTrainer, check_replicas, replica_digest
from ppl_vae.training.guards import TrainingDiverged, invalid_values_reason
from ppl_vae.training.trainer import record, timer

__all__ = ["Run", "TrainingInterrupted", "train_run", "resume_config", "load_run", "kept_checkpoints", "resolve_device"]

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
COLLAPSE_POINTS = 1000  # validation points for the per-epoch KL-per-dimension and active-unit diagnostics


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the message says which checkpoint is kept and how to resume."""


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` called ``name``, checked to exist on this machine.

    :raises ValueError: if CUDA is asked for and not available, or the device index does not exist.
    """
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} requested but CUDA is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass
class Run:
    """A loaded run: its directory, configuration, model, guide and training history."""

    path: Path
    config: TrainConfig
    model: torch.nn.Module
    guide: torch.nn.Module
    history: dict
    device: torch.device
    epoch: int = 0

    @property
    def amortized(self) -> bool:
        """Whether the guide is an encoder (it can then be evaluated on any data point)."""
        return self.config.guide in AMORTIZED_GUIDES

    def splits(self) -> Splits:
        c = self.config
        return load_splits(c.dataset, c.data_dir, c.binarize, c.valid_size, c.seed).to(self.device)


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _changes(saved: TrainConfig, requested: dict) -> list[str]:
    """The options of ``requested`` that differ from the run's and may not change on resume, as flags."""
    return [f"{_flag(k)} {v!r} (the run has {getattr(saved, k)!r})" for k, v in requested.items()
            if k not in RESUMABLE and v != getattr(saved, k)]


def _refuse_changes(run_dir: Path, saved: TrainConfig, requested: dict) -> None:
    changed = _changes(saved, requested)
    if changed:
        raise ValueError(
            f"Cannot resume {run_dir} with {', '.join(changed)}: a run keeps its architecture, data and objective "
            f"(only {', '.join(_flag(k) for k in RESUMABLE)} may change); start a new run in another directory"
        )


def resume_config(run_dir, **given) -> TrainConfig:
    """The configuration of the run in ``run_dir`` with the ``given`` options (e.g. ``epochs=20``) applied: what
    ``ppl-vae train --resume`` trains.

    :raises CheckpointError: if ``run_dir`` holds no readable checkpoint.
    :raises ValueError: naming every given option other than :data:`~ppl_vae.runs.config.RESUMABLE` that differs
        from the run's.
    """
    run_dir = Path(run_dir)
    saved = TrainConfig.from_dict(_load_state(run_dir)["config"])
    _refuse_changes(run_dir, saved, given)
    return saved.replace(**{k: v for k, v in given.items() if k in RESUMABLE})


def _load_state(run_dir: Path) -> dict:
    if not (run_dir / CHECKPOINT).exists() and run_dir.is_dir():
        raise CheckpointError(f"No checkpoint at {run_dir / CHECKPOINT}: the run was stopped before its first "
                              "checkpoint; start it again without resume (--resume)")
    return load_checkpoint(run_dir / CHECKPOINT)


def _evaluate(model, guide, x, samples: int, seed: int, device, what: str) -> float:
    """ELBO on fixed data with a fixed seed, without disturbing the training RNG streams.

    :raises TrainingDiverged: if the model or guide give non-finite distributions or the ELBO is not finite.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            value, reason = elbo(model, guide, x, num_samples=samples).mean, None
        except ValueError as e:
            reason = invalid_values_reason(e)
            if reason is None:
                raise
            value = math.nan
    if not math.isfinite(value):
        raise TrainingDiverged(f"The {what} ELBO became {value}: the trained parameters give non-finite "
                               f"distributions{f' ({reason})' if reason else ''} (lower the learning rate)")
    return value


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


def train_run(config: TrainConfig, run_dir, resume: bool = False, progress: bool = True) -> Run:
    """Train (or resume) the run in ``run_dir``; returns the trained :class:`Run`.

    With ``resume=True`` the run continues from ``run_dir/checkpoint.pt`` up to ``config.epochs`` epochs, and the
    result is bitwise that of an uninterrupted run. ``config`` must then equal the run's configuration except for
    :data:`~ppl_vae.runs.config.RESUMABLE` (:func:`resume_config` builds it from the options that change).

    Under ``torchrun`` (several processes, :func:`ppl_vae.distributed.process_group`) the training is data-parallel
    (:class:`~ppl_vae.training.distributed.DataParallelTrainer`): every process computes its block of each batch of
    ``config.batch_size`` points, the update is that of one process on the whole batch (up to floating-point
    rounding), and only rank 0 writes the run directory; every process reads the checkpoint it resumes.

    :raises RunDirectoryError: if ``run_dir`` is a file, holds other files, already holds a run (without
        ``resume``) or is locked by another training.
    :raises CheckpointError: if the checkpoint to resume is missing, corrupt or not loadable without code.
    :raises ValueError: if ``resume`` would change the configuration (naming the options) or train fewer epochs
        than done; under ``torchrun``, for what data-parallel training cannot honour
        (:meth:`~ppl_vae.runs.config.TrainConfig.data_parallel_problem`).
    :raises TrainingDiverged: on a non-finite loss, gradient or state; the last good checkpoint is kept on disk.
    :raises TrainingInterrupted: on Ctrl-C, saying which checkpoint is kept and how to resume.
    """
    run_dir = Path(run_dir)
    resolve_device(config.device)  # before anything is written
    with process_group(config.device) as group, contextlib.ExitStack() as lock:
        failure = None
        try:
            if group.is_first:  # the process that writes holds the run directory
                lock.enter_context(RunLock(run_dir, resume))
        except Exception as e:
            failure = e
        agree(group, failure)
        try:
            return _train(config, run_dir, resume, progress and group.is_first, group)
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt as e:
            raise TrainingInterrupted(_interrupted(run_dir, config, group.world_size) if group.is_first else
                                      f"process {group.rank} stopped; rank 0 says which checkpoint is kept") from e


def _train(config: TrainConfig, run_dir: Path, resume: bool, progress: bool, group: ProcessGroup) -> Run:
    state, failure = None, None
    try:  # every process sets up the same; if one fails, all stop (agree) before anything is written
        if resume:
            state = _load_state(run_dir)
            saved = TrainConfig.from_dict(state["config"])
            _refuse_changes(run_dir, saved, dataclasses.asdict(config))
            if config.epochs < state["epoch"]:
                raise ValueError(f"--epochs {config.epochs} is fewer than the {state['epoch']} epochs the run in "
                                 f"{run_dir} has trained; pass --epochs {state['epoch']} or more")
            config = saved.replace(**{k: getattr(config, k) for k in RESUMABLE})
        device = resolve_device(config.device)
        pyro.clear_param_store()
        pyro.set_rng_seed(config.seed)
        splits = load_splits(config.dataset, config.data_dir, config.binarize, config.valid_size, config.seed).to(device)
        check_images(splits.train.probs, likelihood="bernoulli", name=f"{config.dataset} training images")
        x_dim = splits.train.probs.shape[1]
        num_points = len(splits.train)
        problem = config.data_parallel_problem(group.world_size, num_points) if group.distributed else None
        if problem:
            raise ValueError(problem)
        model = build_model(config, x_dim).to(device)
        guide = build_guide(config, model, splits.train.probs[:2], num_points).to(device)
        check_pair(model, guide, splits.train.probs[:2], torch.arange(2, device=device))
        objective = build_objective(config)
        trainer = (DataParallelTrainer(model, guide, objective, config.lr, group) if group.distributed
                   else build_trainer(config, model, guide, objective))
        loader = make_loader(splits.train, config.batch_size, shuffle=True, seed=config.seed)
        x0, _, i0 = next(iter(make_loader(splits.train, 2, shuffle=False)))
        devices = _cuda_devices(device)
        split = "valid" if len(splits.valid) else "test"
        valid_x = getattr(splits, split).x
        amortized = config.guide in AMORTIZED_GUIDES
        start_epoch = 0
        if state is not None:
            model.load_state_dict(state["model"])
            guide.load_state_dict(state["guide"])
            trainer.load_state_dict(state["optimizer"], x0, i0)
            trainer.history = state["history"]
            start_epoch = state["epoch"]
            set_rng_state(state["rng"], loader.generators, devices)  # last: nothing draws between this and training
        else:
            trainer.history.update(objective=describe_objective(config), valid_split=split)
            if split != "valid":
                trainer.history[f"{split}_elbo"] = trainer.history.pop("valid_elbo")
    except Exception as e:
        failure = e
    agree(group, failure)
    committed = {"epoch": start_epoch}

    def digest() -> str:
        return replica_digest(model, guide, optimizer=trainer.optimizer, generators=loader.generators, devices=devices)

    def snapshot(epoch: int) -> bytes:
        snap = {"config": dataclasses.asdict(config), "model": model.state_dict(), "guide": guide.state_dict(),
                "optimizer": trainer.state_dict(), "history": trainer.history, "epoch": epoch, "x_dim": x_dim,
                "num_points": num_points, "rng": rng_state(loader.generators, devices)}
        bad = nonfinite_entries({k: snap[k] for k in ("model", "guide", "optimizer")})
        if bad:
            raise TrainingDiverged(f"After epoch {epoch} the training state holds non-finite values in {', '.join(bad[:5])}; "
                                   "it is not saved")
        return checkpoint_bytes(snap)

    def commit(epoch: int) -> None:
        """history.json first, then the kept snapshot, then the checkpoint: the commit point."""
        data = snapshot(epoch)
        _write_json(run_dir / "history.json", trainer.history)
        if config.keep_every and epoch and (epoch % config.keep_every == 0 or epoch == config.epochs):
            atomic_write_bytes(run_dir / "checkpoints" / f"epoch_{epoch:04d}.pt", data)
        atomic_write_bytes(run_dir / CHECKPOINT, data)
        committed["epoch"] = epoch

    def start() -> None:
        _write_json(run_dir / "config.json", dataclasses.asdict(config))  # what is trained from now on
        if state is None:
            commit(0)  # the initial state: evaluable, and resumable with the same streams
        else:
            _write_json(run_dir / "history.json", trainer.history)  # drop an epoch trained but not committed

    def finish(epoch: int, train: dict, seconds: float) -> None:
        """Validation, diagnostics, history and checkpoint of an epoch (rank 0's part)."""
        # a per-datapoint guide has no parameters for validation points: no validation ELBO
        valid = _evaluate(model, guide, valid_x, config.eval_samples, config.seed, device, split) if amortized else math.nan
        record(trainer.history, epoch, seconds, **{f"{split}_elbo": valid}, **train)
        if config.model == "vae" and config.guide == "amortized":  # posterior-collapse diagnostics
            with torch.no_grad(), preserved_randomness():
                kl = kl_per_dimension(model, guide, valid_x[:COLLAPSE_POINTS])
                units = active_units(guide, valid_x[:COLLAPSE_POINTS]).count
            if not torch.isfinite(kl).all():
                raise TrainingDiverged(f"The KL per latent dimension on the {split} points became non-finite")
            trainer.history.setdefault("kl_per_dim", []).append(kl.tolist())
            trainer.history.setdefault("active_units", []).append(units)
        logger.info(_epoch_line(epoch, train, split, valid, seconds))
        commit(epoch)

    if group.distributed:
        check_replicas(group, digest(), "at the start")
    on_first(group, start)
    bar = tqdm(total=(config.epochs - start_epoch) * len(loader), disable=not progress, unit="step", desc="train")
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            bar.set_description(f"epoch {epoch}/{config.epochs}")
            elapsed = timer()
            try:
                train = trainer.train_epoch(loader, bar)
                seconds = elapsed()
                if group.distributed:
                    check_replicas(group, digest(), f"after epoch {epoch}")
                on_first(group, functools.partial(finish, epoch, train, seconds))
            except TrainingDiverged as e:
                if not group.is_first:
                    raise
                raise TrainingDiverged(
                    f"{e}. Epoch {epoch} abandoned; the last good checkpoint (epoch {committed['epoch']}) is kept at "
                    f"{run_dir / CHECKPOINT}"
                ) from e
    finally:
        bar.close()
    history = broadcast_from_first(group, trainer.history)  # rank 0 keeps the history
    return Run(run_dir, config, model, guide, history, device, config.epochs)


def _epoch_line(epoch: int, train: dict, split: str, valid: float, seconds: float) -> str:
    elbo_ = train.get("train_elbo")
    line = f"epoch {epoch}: train ELBO {elbo_:.2f}" if elbo_ is not None else f"epoch {epoch}: train ELBO n/a"
    if elbo_ is None or train["train_objective"] != elbo_:
        line += f" (trained objective {train['train_objective']:.2f})"
    return line + f"  {split} ELBO {valid:.2f}  ({seconds:.1f} s)"


def _interrupted(run_dir: Path, config: TrainConfig, processes: int = 1) -> str:
    try:
        epoch = load_checkpoint(run_dir / CHECKPOINT)["epoch"]
    except CheckpointError:
        return f"before the first checkpoint of {run_dir}; start the training again (without --resume)"
    command = "ppl-vae" if processes == 1 else f"torchrun --standalone --nproc_per_node={processes} -m ppl_vae.cli"
    return (f"the checkpoint of epoch {epoch} is kept in {run_dir / CHECKPOINT}; continue with: "
            f"{command} train --out {run_dir} --epochs {config.epochs} --resume")


def load_run(run_dir, device: str = "cpu", checkpoint: str | Path | None = None) -> Run:
    """Load a run's model and guide from ``run_dir/checkpoint.pt`` (or another ``checkpoint`` file of the run,
    e.g. ``checkpoints/epoch_0010.pt``) for evaluation.

    :raises CheckpointError: if the checkpoint is missing, truncated or corrupt.
    :raises ValueError: if the checkpoint's tensors do not match its configuration.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    path = run_dir / CHECKPOINT if checkpoint is None else Path(checkpoint)
    state = load_checkpoint(path, map_location=dev)
    config = TrainConfig.from_dict(state["config"]).replace(device=device)
    x_dim = state.get("x_dim")
    if not isinstance(x_dim, int):
        raise CheckpointError(f"Checkpoint {path} does not record the data dimension x_dim")
    model = build_model(config, x_dim).to(dev)
    x_example = torch.zeros(2, x_dim, device=dev)
    guide = build_guide(config, model, x_example, state.get("num_points")).to(dev)
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except RuntimeError as e:
        raise ValueError(f"Checkpoint {path} does not match its configuration: {e}") from e
    model.eval(), guide.eval()
    return Run(run_dir, config, model, guide, state["history"], dev, state["epoch"])


def kept_checkpoints(run_dir) -> list[Path]:
    """The checkpoints kept during training (``--keep-every``), in epoch order."""
    return sorted((Path(run_dir) / "checkpoints").glob("epoch_*.pt"))
