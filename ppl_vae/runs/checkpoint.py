"""Atomic, validated checkpoints that never execute code.

Writing: the bytes go to a temporary file in the same directory (named ``.<name>.<pid>.<random>.tmp``), are
fsynced, then renamed over the target: a reader sees the previous file or the new one, never half of one. A write
killed before the rename leaves its temporary file; :func:`clean_stale_temporaries` removes those of dead processes.

Reading: ``torch.load(..., weights_only=True)``: only tensors and plain Python types (dict, list, tuple, str, int,
float, bool, None) are unpickled, so a crafted file cannot run code. Everything a checkpoint holds is stored that
way — random-generator states included (:func:`rng_state`). A file that needs anything else is refused with a
:class:`CheckpointError` that says so. Non-finite tensors are never written.
"""
from __future__ import annotations

import io
import os
import pickle
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ppl_vae.training.guards import nonfinite_tensors

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "checkpoint_bytes", "atomic_write_bytes",
           "clean_stale_temporaries", "rng_state", "set_rng_state", "nonfinite_entries", "FORMAT"]

FORMAT = "ppl_vae-checkpoint-2"
REQUIRED = ("format", "config", "model", "guide", "optimizer", "history", "epoch")
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, corrupt, not a ppl_vae checkpoint, or needs more than tensors
    and plain types to load."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync, ``os.replace``).

    The temporary file is ``.<name>.<pid>.<random>.tmp``; on any exception (``KeyboardInterrupt`` included) it is
    removed. A process killed outright leaves it behind: :func:`clean_stale_temporaries`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def clean_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`atomic_write_bytes` left in ``directory`` when its process was killed
    (those whose process no longer runs; this process's own are kept).

    :returns: the removed paths.
    """
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        m = _TEMPORARY.match(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def nonfinite_entries(state: dict, prefix: str = "") -> list[str]:
    """Paths (``model.decoder.0.weight``, ``optimizer.optimizer.state.3.exp_avg_sq``) of the floating-point tensors
    in the nested ``state`` that hold a NaN or infinite value."""
    named = []

    def walk(obj, path):
        if isinstance(obj, torch.Tensor):
            named.append((path, obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{path}.{i}" if path else str(i))

    walk(state, prefix)
    return nonfinite_tensors(named)


def checkpoint_bytes(state: dict) -> bytes:
    """The bytes of a checkpoint of ``state`` (``torch.save`` with the format tag), checked to load back with
    ``weights_only=True``.

    :raises ValueError: if ``state`` misses a required key, holds a non-finite tensor (named), or holds an object
        that is not a tensor or a plain type.
    """
    missing = [k for k in REQUIRED if k != "format" and k not in state]
    if missing:
        raise ValueError(f"Expected the checkpoint state to hold {list(REQUIRED[1:])}, but it is missing {missing}")
    bad = nonfinite_entries({k: state[k] for k in ("model", "guide", "optimizer")})
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"Refusing to write a checkpoint with non-finite values in {shown}")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    data = buffer.getvalue()
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise ValueError(
            f"Expected a checkpoint state of tensors and plain types only, but it holds {found.group(1) if found else 'more'}"
        ) from e
    return data


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save ``state`` (the keys of ``REQUIRED`` but ``format``; tensors and plain types only) atomically.

    :raises ValueError: as :func:`checkpoint_bytes`; nothing is written then.
    """
    atomic_write_bytes(path, checkpoint_bytes(state))


def _unpickler_reason(e: BaseException) -> str:
    found = re.search(r"WeightsUnpickler error: *\s*(.+)", str(e))
    return found.group(1).strip() if found else str(e).strip().splitlines()[0]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and validate a checkpoint written by :func:`save_checkpoint`, with ``torch.load(weights_only=True)``.

    :raises CheckpointError: naming the file and the problem: missing; needs objects other than tensors and plain
        types (refused, it could run code); truncated or corrupt; not a ppl_vae checkpoint (or an older format);
        missing keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"Refusing to load {path}: it needs {found.group(1)}, which is not a tensor or a plain Python type, "
                "and unpickling it could execute code (checkpoints are read with torch.load(weights_only=True))"
            ) from e
        raise CheckpointError(f"Checkpoint {path} is truncated or corrupt (UnpicklingError: {_unpickler_reason(e)})") from e
    except Exception as e:  # torch raises RuntimeError, EOFError... on truncated or foreign files
        raise CheckpointError(f"Checkpoint {path} is truncated or corrupt ({_first_line(e)})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a ppl_vae checkpoint of this version: expected format {FORMAT!r}, found {found!r}")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"Checkpoint {path} is missing keys {missing}")
    return state


def rng_state(generators=(), devices=()) -> dict:
    """Every random stream a training draws from, as tensors and plain types: torch's CPU generator, the CUDA
    generators of ``devices``, Python's ``random``, NumPy's global generator and the given ``torch.Generator`` s
    (e.g. a loader's shuffling and binarization streams)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(d) for d in devices],
        "random": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict, generators=(), devices=()) -> None:
    """Restore :func:`rng_state`'s streams (call it after everything that draws while setting up, right before
    training resumes).

    :raises CheckpointError: if the state does not hold the streams of ``generators`` and ``devices``.
    """
    if len(state.get("generators", ())) != len(generators) or len(state.get("cuda", ())) != len(devices):
        raise CheckpointError(
            f"Expected random states for {len(generators)} generators and {len(devices)} CUDA devices, found "
            f"{len(state.get('generators', ()))} and {len(state.get('cuda', ()))}"
        )
    torch.set_rng_state(state["torch"])
    for d, s in zip(devices, state["cuda"]):
        torch.cuda.set_rng_state(s, d)
    r = state["random"]
    random.setstate((r["version"], tuple(r["state"].tolist()), r["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)
