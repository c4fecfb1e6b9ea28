"""What a job writes: all its files or none. Files are first written to a hidden staging directory next to the
destination and moved into it only when every one of them is complete, so that an error or Ctrl-C half-way leaves
the destination as it was."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ppl_vae.runs.checkpoint import atomic_write_bytes
from ppl_vae.runs.directory import CHECKPOINT, MARKER, is_run_directory

__all__ = ["check_output_dir", "check_output_file", "json_bytes", "json_safe", "staged_directory", "write_json"]

logger = logging.getLogger(__name__)


def _check_ancestors(path: Path, what: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"Expected {what} {str(path)!r} under a directory, but {str(parent)!r} is a file")
            return


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Check that ``path`` can be a directory of outputs: it is one, or does not exist under directories.

    :param path: the directory.
    :param str what: how to call it in the message (e.g. ``"--out"``).
    :returns: ``path`` as a :class:`~pathlib.Path`.
    :raises ValueError: if ``path`` or one of its parents is a file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"Expected {what} {str(path)!r} to be a directory, but it is a file")
    _check_ancestors(path, what)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check that ``path`` can be written as a file: it is not a directory and its parents are not files.

    :param path: the file.
    :param str what: how to call it in the message.
    :returns: ``path`` as a :class:`~pathlib.Path`.
    :raises ValueError: if ``path`` is a directory, one of its parents a file, or a file of a run (its checkpoint,
        marker, configuration, history or kept checkpoints).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Expected {what} {str(path)!r} to be a file, but it is a directory")
    _check_ancestors(path, what)
    _refuse_run_files(path, what)
    return path


RUN_FILES = (CHECKPOINT, MARKER, "config.json", "history.json")  # what a run directory holds of its own


def _refuse_run_files(path: Path, what: str) -> None:
    """A report never replaces a file of a run: its checkpoint, marker, configuration, history or kept
    checkpoints."""
    parent = path.parent
    if (is_run_directory(parent) and path.name in RUN_FILES) or (
            parent.name == "checkpoints" and is_run_directory(parent.parent)):
        raise ValueError(f"Expected {what} {str(path)!r} to be a new file, but it is the run's own "
                         f"{path.name} (in {parent}): choose another path")


def json_safe(obj):
    """``obj`` with every NaN or infinite float replaced by ``None``: JSON has no such numbers, and Python's
    ``json`` module would write ``NaN``/``Infinity``, which other readers refuse.

    :param obj: nested dicts, lists, tuples and scalars.
    :returns: the same structure (tuples become lists), finite floats unchanged.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_bytes(obj) -> bytes:
    """``obj`` as indented, strictly valid JSON (see :func:`json_safe`), UTF-8 encoded, with a final newline.

    :param obj: a JSON-serializable object.
    :returns: the bytes.
    """
    return (json.dumps(json_safe(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode()


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as JSON (:func:`json_bytes`: non-finite floats as ``null``), atomically.

    :param path: the file.
    :param obj: a JSON-serializable object.
    :returns: ``path``.
    :raises ValueError: if ``path`` is a directory, or a file of a run (its checkpoint, configuration, history).
    :raises OSError: if the file cannot be written (it is then left as it was).
    """
    path = check_output_file(path)
    atomic_write_bytes(path, json_bytes(obj))
    logger.info("wrote %s", path)
    return path


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside ``out_dir`` to write into; on normal exit its files are moved into ``out_dir``,
    on an exception (or Ctrl-C) they are deleted.

    A new ``out_dir`` appears at once, complete (the staging directory is renamed). Into an existing one the files
    are moved one by one (other files there are kept); if a move fails, the files this call added are removed again
    (a file it had already replaced keeps its new, complete content).

    :param out_dir: the destination directory.
    :returns: a context manager yielding the staging directory.
    :raises ValueError: if ``out_dir`` or one of its parents is a file.
    :raises OSError: if the directories cannot be created or the files moved.
    """
    out_dir = check_output_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # as os.mkdir would make it (mkdtemp makes it private)
    try:
        yield stage
        files = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file())
        if not out_dir.exists():
            os.replace(stage, out_dir)
        else:
            added = []
            try:
                for f in files:
                    dest = out_dir / f
                    new = not dest.exists()
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(stage / f, dest)
                    if new:
                        added.append(dest)
            except BaseException:
                for dest in added:
                    dest.unlink(missing_ok=True)
                raise
        for f in files:
            logger.info("wrote %s", out_dir / f)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
