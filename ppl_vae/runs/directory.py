"""Run directories are owned and locked.

A directory becomes a run when training first claims it: it must then not exist, or be empty, or already be a run.
The claim writes the marker file ``.ppl_vae-run``; a directory with that marker (or a ``checkpoint.pt``) is a run.
A non-empty directory that is not a run — a user's own files — is never written into.

While a training runs, it holds an exclusive lock (``fcntl.flock``) on the marker: a second training of the same
directory is refused with :class:`RunDirectoryError` instead of interleaving its files with the first's. The lock
goes with the process (also when it is killed); the marker stays.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import clean_stale_temporaries

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["MARKER", "RunDirectoryError", "RunLock", "is_run_directory"]

MARKER = ".ppl_vae-run"
CHECKPOINT = "checkpoint.pt"


class RunDirectoryError(ValueError):
    """A run directory that cannot be used: a file, a directory of other files, or one in use by another training."""


def is_run_directory(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run directory (has the marker or a checkpoint)."""
    path = Path(path)
    return (path / MARKER).is_file() or (path / CHECKPOINT).is_file()


class RunLock:
    """Claim and lock ``run_dir`` for a training; a context manager (the lock is released on exit).

    :param run_dir: the run directory (``--out``).
    :param bool resume: the training continues the run there (it must be a run) instead of starting one (the
        directory must not hold a checkpoint, and be empty or a run).
    :raises RunDirectoryError: if ``run_dir`` is a file, a non-empty directory that is not a run, a run when
        ``resume`` is false, not a run when ``resume`` is true, or locked by another training.
    """

    def __init__(self, run_dir: str | os.PathLike, resume: bool):
        self.path, self.resume = Path(run_dir), resume
        self._fd: int | None = None
        self._created: list[Path] = []  # what __enter__ created, removed again if no checkpoint gets written

    def _check(self) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"Expected --out to name a directory, but {path} is a file")
        if self.resume:
            if not path.is_dir() or not is_run_directory(path):
                raise RunDirectoryError(f"Expected a run directory to resume at {path}, but it holds no ppl_vae run")
            return
        if (path / CHECKPOINT).exists():
            raise RunDirectoryError(f"{path} already holds a run; pass resume=True (--resume) or choose another directory")
        if path.is_dir() and not (path / MARKER).is_file() and any(path.iterdir()):
            raise RunDirectoryError(
                f"Expected --out to be a new or empty directory or a ppl_vae run, but {path} holds other files "
                "(refusing to write into it)"
            )

    def __enter__(self) -> RunLock:
        self._check()
        self._created = [p for p in (*reversed(self.path.parents), self.path) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / MARKER).exists():
            self._created.append(self.path / MARKER)
        fd = os.open(self.path / MARKER, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = _read_pid(fd)
                os.close(fd)
                raise RunDirectoryError(
                    f"{self.path} is in use by another training{f' (process {other})' if other else ''}; wait for "
                    "it to finish or choose another directory"
                ) from None
        self._fd = fd
        try:
            self._check()  # again, now that no other training can change it
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps({"format": "ppl_vae-run-1", "pid": os.getpid()}) + "\n").encode(), 0)
            for directory in (self.path, self.path / "checkpoints"):
                clean_stale_temporaries(directory)
        except BaseException:
            self.release()
            raise
        return self

    def _remove_what_we_created(self) -> None:
        """A training that failed before writing anything leaves nothing behind: the marker and the directories it
        created go (only if empty; nothing else is ever removed). Once it has written a file, the marker stays, so
        the directory remains recognizably ours and a new training can start there."""
        if (self.path / CHECKPOINT).exists() or not self.path.is_dir():
            return
        if any(p.name != MARKER for p in self.path.iterdir()):
            return  # files of this training (its config, an interrupted write): the marker keeps the directory ours
        for path in reversed(self._created):
            try:
                path.unlink() if path.name == MARKER else path.rmdir()
            except OSError:
                return  # not empty (someone else's files): keep it and everything above it

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._remove_what_we_created()
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(json.loads(os.pread(fd, 200, 0).decode() or "{}").get("pid"))
    except (ValueError, TypeError, OSError):
        return None
