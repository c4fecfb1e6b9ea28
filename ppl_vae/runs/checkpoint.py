"""Atomic, validated checkpoints: write to a temporary file in the same directory, fsync, then rename.

A reader never sees a half-written file: either the previous checkpoint or the new one. Loading checks the
format and names what is wrong with a truncated or foreign file.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "atomic_write_bytes", "FORMAT"]

FORMAT = "ppl_vae-checkpoint-1"
REQUIRED = ("format", "config", "model", "guide", "optimizer", "history", "epoch")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, corrupt or not a ppl_vae checkpoint."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save ``state`` (must hold the keys in ``REQUIRED`` but ``format``) atomically with ``torch.save``.

    :raises ValueError: if ``state`` misses a required key.
    """
    missing = [k for k in REQUIRED if k != "format" and k not in state]
    if missing:
        raise ValueError(f"Checkpoint state is missing keys {missing}")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    :raises CheckpointError: naming the file and the problem (missing, truncated/corrupt, wrong format).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... on bad files
        raise CheckpointError(f"Checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a ppl_vae checkpoint: expected format {FORMAT!r}, found {found!r}")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"Checkpoint {path} is missing keys {missing}")
    return state
