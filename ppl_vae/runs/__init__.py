"""Run directories: a configured model/guide pair trained, checkpointed atomically, and loaded back."""
from .checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint
from .config import TrainConfig, build_guide, build_model, build_objective
from .run import Run, kept_checkpoints, load_run, resolve_device, train_run

__all__ = ["CheckpointError", "Run", "TrainConfig", "atomic_write_bytes", "build_guide", "build_model",
           "build_objective", "kept_checkpoints", "load_checkpoint", "load_run", "resolve_device", "save_checkpoint",
           "train_run"]
