"""Run directories: a configured model/guide pair trained, checkpointed atomically, and loaded back."""
from .checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint
from .config import TrainConfig, build_guide, build_model, build_objective
from .directory import RunDirectoryError
from .run import Run, TrainingInterrupted, kept_checkpoints, load_run, resolve_device, resume_config, train_run

__all__ = ["CheckpointError", "Run", "RunDirectoryError", "TrainConfig", "TrainingInterrupted", "atomic_write_bytes",
           "build_guide", "build_model", "build_objective", "kept_checkpoints", "load_checkpoint", "load_run",
           "resolve_device", "resume_config", "save_checkpoint", "train_run"]
