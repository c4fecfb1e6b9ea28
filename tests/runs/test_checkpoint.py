"""Checkpoints never execute code, hold only tensors and plain types, never hold non-finite values, and killed
writes leave nothing behind once the next training starts."""
import os
import subprocess
import sys

import pytest
import torch

from ppl_vae.cli import main
from ppl_vae.runs import CheckpointError, TrainConfig, load_checkpoint, load_run, save_checkpoint, train_run
from ppl_vae.runs.checkpoint import atomic_write_bytes, clean_stale_temporaries, rng_state, set_rng_state

SMALL = dict(z_dim=3, hidden=(16,), batch_size=250, valid_size=3500)


class Payload:
    """What an attacker puts in a checkpoint: unpickling it runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _poisoned(run_dir, marker):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["history"]["note"] = Payload(marker)
    torch.save(state, run_dir / "checkpoint.pt")


@pytest.mark.parametrize("command", ["evaluate", "plot", "gap", "posterior", "resume"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, float32, capsys, command):
    run = tmp_path / "r"
    train_run(TrainConfig(epochs=1, **SMALL), run, progress=False)
    marker = tmp_path / "PWNED"
    _poisoned(run, marker)
    argv = {"evaluate": ["evaluate", str(run), "--n", "5", "--quiet"], "plot": ["plot", str(run)],
            "gap": ["gap", str(run), "--n", "2", "--quiet"], "posterior": ["posterior", str(run), "--quiet"],
            "resume": ["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]}[command]
    assert main(argv) != 0
    assert not marker.exists()
    assert "needs posix.system" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r"Refusing to load .*needs posix.system.*weights_only=True"):
        load_run(run)


def test_checkpoints_load_with_weights_only_in_a_fresh_process(tmp_path, float32):
    """Nothing in a checkpoint needs an allow-list: RNG states and the configuration are tensors and plain types."""
    train_run(TrainConfig(epochs=1, guide="flow", warmup_steps=3, **SMALL), tmp_path / "r", progress=False)
    code = f"import torch; s = torch.load({str(tmp_path / 'r' / 'checkpoint.pt')!r}, weights_only=True); print(s['epoch'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_rng_state_round_trips_every_stream():
    import random

    import numpy as np

    g = torch.Generator().manual_seed(5)
    state = rng_state([g])
    draws = (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=g))
    set_rng_state(state, [g])
    again = (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=g))
    assert torch.equal(draws[0], again[0]) and draws[1:3] == again[1:3] and torch.equal(draws[3], again[3])


def test_non_finite_state_is_never_written(tmp_path):
    state = {"config": {}, "model": {"w": torch.tensor([1.0, float("nan")])}, "guide": {}, "optimizer": {},
             "history": {}, "epoch": 1}
    with pytest.raises(ValueError, match=r"non-finite values in model.w"):
        save_checkpoint(tmp_path / "c.pt", state)
    assert not (tmp_path / "c.pt").exists()
    state["model"]["w"] = object()
    with pytest.raises(ValueError, match="tensors and plain types only"):
        save_checkpoint(tmp_path / "c.pt", state)
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_killed_writes_are_removed_by_the_next_training(tmp_path, float32):
    run = tmp_path / "r"
    train_run(TrainConfig(epochs=1, keep_every=1, **SMALL), run, progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    stale = [run / f".checkpoint.pt.{pid}.abc123.tmp", run / "checkpoints" / f".epoch_0002.pt.{pid}.x_9.tmp"]
    alive = run / f".history.json.{os.getpid()}.q1.tmp"  # a write in progress in a live process: kept
    foreign = run / "notes.tmp"  # not ours: kept
    for p in (*stale, alive, foreign):
        p.write_bytes(b"partial")
    train_run(TrainConfig(epochs=2, keep_every=1, **SMALL), run, resume=True, progress=False)
    assert not any(p.exists() for p in stale)
    assert alive.exists() and foreign.exists()
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_old_format_is_refused_with_its_name(tmp_path):
    torch.save({"format": "ppl_vae-checkpoint-1", "config": {}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="expected format 'ppl_vae-checkpoint-2', found 'ppl_vae-checkpoint-1'"):
        load_checkpoint(tmp_path / "c.pt")
