"""Run directories: train a configured model/guide pair, checkpoint it, load it back.

A run directory holds ``config.json``, ``checkpoint.pt`` (model, guide, optimizer, history, RNG states;
written atomically after every epoch), ``history.json`` and, after ``evaluate``/``plot``, ``evaluation.json``
and ``figures/``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ppl_vae.conventions import check_pair
from ppl_vae.data import Splits, check_images, load_splits, make_loader
from ppl_vae.diagnostics.collapse import active_units, kl_per_dimension
from ppl_vae.estimators import elbo
from ppl_vae.runs.checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint
from ppl_vae.runs.config import AMORTIZED_GUIDES, TrainConfig, build_guide, build_model, build_objective
from ppl_vae.runs.zoo import ADVERSARIAL
from ppl_vae.training.adversarial import AdversarialTrainer
from ppl_vae.training.trainer import Trainer, TrainingDiverged, record, timer

__all__ = ["Run", "train_run", "load_run", "kept_checkpoints", "resolve_device"]

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
COLLAPSE_POINTS = 1000  # validation points for the per-epoch KL-per-dimension and active-unit diagnostics


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
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _evaluate(model, guide, x, samples: int, seed: int, device) -> float:
    """ELBO on fixed data with a fixed seed, without disturbing the training RNG streams."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return elbo(model, guide, x, num_samples=samples).mean


def train_run(config: TrainConfig, run_dir, resume: bool = False, progress: bool = True) -> Run:
    """Train (or resume) the run in ``run_dir``; returns the trained :class:`Run`.

    With ``resume=True`` the run continues from ``run_dir/checkpoint.pt`` up to ``config.epochs`` epochs,
    with the optimizer, data order and random streams as they were, so that 2 epochs then 1 more equal 3.

    :raises TrainingDiverged: on a NaN/inf loss; the last good checkpoint is kept on disk.
    :raises ValueError: if ``run_dir`` already holds a run and ``resume`` is false.
    """
    run_dir = Path(run_dir)
    state = None
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT)
        saved = TrainConfig.from_dict(state["config"])
        config = saved.replace(epochs=config.epochs, device=config.device)
    elif (run_dir / CHECKPOINT).exists():
        raise ValueError(f"{run_dir} already holds a run; pass resume=True (--resume) or choose another directory")
    device = resolve_device(config.device)
    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    splits = load_splits(config.dataset, config.data_dir, config.binarize, config.valid_size, config.seed).to(device)
    check_images(splits.train.probs, likelihood="bernoulli", name=f"{config.dataset} training images")
    x_dim = splits.train.probs.shape[1]
    model = build_model(config, x_dim).to(device)
    num_points = len(splits.train)
    guide = build_guide(config, model, splits.train.probs[:2], num_points).to(device)
    check_pair(model, guide, splits.train.probs[:2], torch.arange(2, device=device))
    if config.model in ADVERSARIAL:
        trainer = AdversarialTrainer(config.model, model, guide, config.lr, config.gamma)
    else:
        trainer = Trainer(model, guide, build_objective(config), config.lr)
    loader = make_loader(splits.train, config.batch_size, shuffle=True, seed=config.seed)
    x0, _, i0 = next(iter(make_loader(splits.train, 2, shuffle=False)))
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
        trainer.load_state_dict(state["optimizer"], x0, i0)
        trainer.history = state["history"]
        start_epoch = state["epoch"]
        for gen, s in zip(loader.generators, state["rng"]["loader"]):
            gen.set_state(s)
        pyro.util.set_rng_state(state["rng"]["pyro"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.keep_every:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
    _write_json(run_dir / "config.json", dataclasses.asdict(config))
    valid_x = splits.valid.x if len(splits.valid) else splits.test.x
    amortized = config.guide in AMORTIZED_GUIDES

    def save(epoch: int) -> None:
        save_checkpoint(
            run_dir / CHECKPOINT,
            {
                "config": dataclasses.asdict(config),
                "model": model.state_dict(),
                "guide": guide.state_dict(),
                "optimizer": trainer.state_dict(),
                "history": trainer.history,
                "epoch": epoch,
                "x_dim": x_dim,
                "num_points": num_points,
                "rng": {"loader": [g.get_state() for g in loader.generators], "pyro": pyro.util.get_rng_state()},
            },
        )

    if state is None:
        save(0)  # the initial state: evaluable, and resumable with the same streams
    bar = tqdm(total=(config.epochs - start_epoch) * len(loader), disable=not progress, unit="step", desc="train")
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            bar.set_description(f"epoch {epoch}/{config.epochs}")
            elapsed = timer()
            try:
                train_elbo = trainer.train_epoch(loader, bar)
            except TrainingDiverged as e:
                raise TrainingDiverged(
                    f"{e}. Epoch {epoch} abandoned; the last good checkpoint (epoch {epoch - 1}) is kept at "
                    f"{run_dir / CHECKPOINT}"
                ) from e
            seconds = elapsed()
            # a per-datapoint guide has no parameters for validation points: no validation ELBO
            valid_elbo = _evaluate(model, guide, valid_x, config.eval_samples, config.seed, device) if amortized else math.nan
            record(trainer.history, epoch, train_elbo, valid_elbo, seconds)
            if config.model == "vae" and config.guide == "amortized":  # posterior-collapse diagnostics
                with torch.no_grad():
                    kl = kl_per_dimension(model, guide, valid_x[:COLLAPSE_POINTS])
                trainer.history.setdefault("kl_per_dim", []).append(kl.tolist())
                trainer.history.setdefault("active_units", []).append(active_units(guide, valid_x[:COLLAPSE_POINTS]).count)
            logger.info("epoch %d: train ELBO %.2f  valid ELBO %.2f  (%.1f s)", epoch, train_elbo, valid_elbo, seconds)
            save(epoch)
            if config.keep_every and (epoch % config.keep_every == 0 or epoch == config.epochs):
                shutil.copyfile(run_dir / CHECKPOINT, run_dir / "checkpoints" / f"epoch_{epoch:04d}.pt")
            _write_json(run_dir / "history.json", trainer.history)
    finally:
        bar.close()
    return Run(run_dir, config, model, guide, trainer.history, device, config.epochs)


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
