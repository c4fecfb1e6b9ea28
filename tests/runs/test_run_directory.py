"""Run directories are owned and whole: a user's directory is never written into, a run is locked against a second
training, kept snapshots are written atomically, and history.json never lags the checkpoint."""
import json
import os

import pytest
import torch

from ppl_vae.data import DataError
from ppl_vae.runs import RunDirectoryError, TrainConfig, load_checkpoint, train_run
from ppl_vae.runs import run as run_module
from ppl_vae.runs.directory import MARKER, RunLock

SMALL = dict(z_dim=3, hidden=(16,), batch_size=250, valid_size=3500)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_directory_of_other_files_is_refused_and_untouched(tmp_path, float32):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.json").write_text("my own config")
    (user / "history.json").write_text("my notes")
    with pytest.raises(RunDirectoryError, match="holds other files"):
        train_run(TrainConfig(epochs=1, **SMALL), user, progress=False)
    assert sorted(p.name for p in user.iterdir()) == ["config.json", "history.json"]
    assert (user / "config.json").read_text() == "my own config"
    with pytest.raises(RunDirectoryError, match="holds no ppl_vae run"):
        train_run(TrainConfig(epochs=1, **SMALL), user, resume=True, progress=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file"):
        train_run(TrainConfig(epochs=1, **SMALL), tmp_path / "afile", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    train_run(TrainConfig(epochs=0, **SMALL), empty, progress=False)  # an empty directory becomes a run
    assert (empty / MARKER).is_file() and (empty / "checkpoint.pt").is_file()


def test_a_run_is_locked_against_a_second_training(tmp_path, float32):
    run = tmp_path / "r"
    train_run(TrainConfig(epochs=1, **SMALL), run, progress=False)
    before = (run / "checkpoint.pt").read_bytes()
    with RunLock(run, resume=True):  # a training in progress (another process holds the same kind of lock)
        with pytest.raises(RunDirectoryError, match=rf"{run} is in use by another training \(process {os.getpid()}\)"):
            train_run(TrainConfig(epochs=2, **SMALL), run, resume=True, progress=False)
        with pytest.raises(RunDirectoryError, match="in use by another training|already holds a run"):
            train_run(TrainConfig(epochs=2, **SMALL), run, progress=False)
    assert (run / "checkpoint.pt").read_bytes() == before
    train_run(TrainConfig(epochs=2, **SMALL), run, resume=True, progress=False)  # free again


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, float32):
    run = tmp_path / "r"
    with RunLock(run, resume=False):
        pass  # claimed, then killed before the first checkpoint
    with pytest.raises(Exception, match="stopped before its first checkpoint; start it again without resume"):
        train_run(TrainConfig(epochs=1, **SMALL), run, resume=True, progress=False)
    train_run(TrainConfig(epochs=1, **SMALL), run, progress=False)


def test_history_json_never_lags_the_checkpoint(tmp_path, float32, monkeypatch):
    """A kill between history.json and checkpoint.pt leaves history.json one epoch ahead (that epoch was trained,
    not committed), never behind; resume drops it and recomputes it identically."""
    run = tmp_path / "r"
    config = TrainConfig(epochs=3, keep_every=1, **SMALL)
    straight = train_run(config, tmp_path / "straight", progress=False)
    original = run_module.atomic_write_bytes
    calls = {"checkpoint": 0}

    def killed_at_epoch_2(path, data):
        if path.name == "checkpoint.pt":
            calls["checkpoint"] += 1
            if calls["checkpoint"] == 3:  # epochs 0, 1 committed; killed before epoch 2's commit
                raise KeyboardInterrupt
        original(path, data)

    monkeypatch.setattr(run_module, "atomic_write_bytes", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt, match=r"the checkpoint of epoch 1 is kept.*--epochs 3 --resume"):
        train_run(config, run, progress=False)
    monkeypatch.setattr(run_module, "atomic_write_bytes", original)
    history = json.loads((run / "history.json").read_text())
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1 and history["epoch"] == [1, 2]
    # the epoch-2 snapshot was written before the commit: whole, and identical to what resume writes again
    assert load_checkpoint(run / "checkpoints" / "epoch_0002.pt")["epoch"] == 2
    resumed = train_run(config, run, resume=True, progress=False)
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2, 3]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]


def test_history_json_matches_the_checkpoint(tmp_path, float32):
    train_run(TrainConfig(epochs=2, **SMALL), tmp_path / "r", progress=False)
    on_disk = json.loads((tmp_path / "r" / "history.json").read_text())
    assert on_disk == json.loads(json.dumps(load_checkpoint(tmp_path / "r" / "checkpoint.pt")["history"]))


def test_a_training_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, float32):
    """The directories and the marker it created go again; what existed before stays as it was."""
    bad = TrainConfig(epochs=1, dataset="mnist", data_dir=str(tmp_path / "no-such-data"), **SMALL)
    with pytest.raises((DataError, OSError), match="no-such-data"):
        train_run(bad, tmp_path / "a" / "b" / "run", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises((DataError, OSError), match="no-such-data"):
        train_run(bad, tmp_path / "empty", progress=False)
    assert (tmp_path / "empty").is_dir() and list((tmp_path / "empty").iterdir()) == []
    with RunLock(tmp_path / "kept", resume=False):
        (tmp_path / "kept" / "notes.txt").write_text("written meanwhile")
    with pytest.raises(RuntimeError), RunLock(tmp_path / "kept", resume=False):
        raise RuntimeError("fails")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [MARKER, "notes.txt"]  # as it was before
