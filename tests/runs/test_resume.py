"""A resumed run equals an uninterrupted one, bitwise, for every --model, --elbo, --guide and schedule option; a
resume never changes what the run is, and config.json never says something false."""
import dataclasses
import json

import pytest
import torch

from ppl_vae.cli import main
from ppl_vae.runs import TrainConfig, load_checkpoint, resume_config, train_run

SMALL = dict(z_dim=3, hidden=(16,), batch_size=250, valid_size=3500)  # 1,500 training images, 6 steps per epoch

OPTIONS = {
    "vae-trace": {},
    "vae-meanfield": dict(elbo="meanfield"),
    "vae-iwae": dict(elbo="iwae", k=3),
    "vae-trace-k2": dict(k=2),
    "guide-flow": dict(guide="flow"),
    "guide-flow-planar": dict(guide="flow", flow="planar"),
    "guide-ffg": dict(guide="ffg"),
    "beta": dict(beta=2.0),
    "warmup": dict(warmup_steps=5),
    "cycle": dict(cycle_steps=3, beta=2.0),
    "free-bits": dict(free_bits=0.3, elbo="meanfield"),
    "free-bits-warmup": dict(free_bits=0.3, elbo="meanfield", warmup_steps=5),
    "keep-every": dict(keep_every=1),
    "valid-size-0": dict(valid_size=0),
    "binarize-static": dict(binarize="static"),
    "ae": dict(model="ae"),
    "vqvae": dict(model="vqvae", z_dim=50),
    "vaegan": dict(model="vaegan", gamma=0.5),
    "aae": dict(model="aae"),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Small networks: one thread avoids OpenMP contention on a shared machine; results are bitwise reproducible
    for a fixed thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def differences(a, b, path="") -> list[str]:
    """Paths where two checkpoint states differ (tensors bitwise, with dtype and shape), ignoring timings."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{path} (keys)"]
        return [d for k in a if k != "seconds" for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [f"{path} (length)"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}.{i}")]
    if hasattr(a, "shape"):  # an array of another library
        return [] if getattr(b, "shape", None) == a.shape and bool((a == b).all()) else [path]
    return [] if a == b else [path]


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, float32, name):
    """Two epochs straight against 0 (the epoch-0 checkpoint a crash in epoch 1 leaves), then 1, then 2: every
    tensor of the checkpoint (parameters, Adam moments, schedule step, random streams) and the history equal."""
    options = dict(SMALL, **OPTIONS[name])
    config = TrainConfig(epochs=2, **options)
    train_run(config, tmp_path / "straight", progress=False)
    for epochs in (0, 1, 2):
        train_run(config.replace(epochs=epochs), tmp_path / "resumed", resume=epochs > 0, progress=False)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert straight["epoch"] == resumed["epoch"] == 2
    assert differences(straight, resumed) == []
    assert straight["history"]["train_objective"][0] != straight["history"]["train_objective"][1]  # it trained
    if config.keep_every:
        for epoch in (1, 2):
            kept = [load_checkpoint(tmp_path / run / "checkpoints" / f"epoch_{epoch:04d}.pt") for run in ("straight", "resumed")]
            for state in kept:  # the target number of epochs of the session that wrote it (2, or 1 when resumed)
                state["config"].pop("epochs")
            assert differences(*kept) == []


def test_warmup_schedule_step_is_restored(tmp_path, float32):
    """The issue's case: a warm-up resumed after epoch 1 continues at its step, not at beta = 0."""
    config = TrainConfig(epochs=1, warmup_steps=40, beta=4.0, **SMALL)
    train_run(config, tmp_path / "r", progress=False)
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["optimizer"]
    assert state["objective"] == {"step": state["steps"]} and state["steps"] == 6


def _config_json(path):
    return json.loads((path / "config.json").read_text())


def test_resume_refuses_changed_options_by_name(tmp_path, float32):
    config = TrainConfig(epochs=1, **SMALL)
    train_run(config, tmp_path / "r", progress=False)
    before = _config_json(tmp_path / "r")
    with pytest.raises(ValueError, match=r"--z-dim 5 \(the run has 3\).*--elbo 'meanfield' \(the run has 'trace'\)"):
        train_run(config.replace(z_dim=5, elbo="meanfield", epochs=2), tmp_path / "r", resume=True, progress=False)
    with pytest.raises(ValueError, match=r"--hidden \(32,\) \(the run has \(16,\)\)"):
        resume_config(tmp_path / "r", epochs=3, hidden=(32,))
    assert _config_json(tmp_path / "r") == before
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    # what may change: epochs, device, data_dir
    assert resume_config(tmp_path / "r", epochs=3, device="cpu") == config.replace(epochs=3)


def test_resume_with_fewer_epochs_is_refused_and_config_json_stays_true(tmp_path, float32, capsys):
    run = tmp_path / "r"
    assert main(["train", "--out", str(run), "--epochs", "2", "--z-dim", "3", "--hidden", "16", "--batch-size", "250",
                 "--valid-size", "3500", "--quiet"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--epochs", "1", "--quiet"]) == 2
    assert "--epochs 1 is fewer than the 2 epochs" in capsys.readouterr().err
    assert _config_json(run)["epochs"] == 2
    # options left out keep the run's values; a given one that differs is refused by name
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert _config_json(run)["epochs"] == 3 and _config_json(run)["z_dim"] == 3
    assert main(["train", "--out", str(run), "--resume", "--epochs", "4", "--z-dim", "50", "--quiet"]) == 2
    assert "--z-dim 50 (the run has 3)" in capsys.readouterr().err
    assert _config_json(run)["epochs"] == 3


def test_config_json_is_the_checkpoint_config(tmp_path, float32):
    config = TrainConfig(epochs=1, **SMALL)
    train_run(config, tmp_path / "r", progress=False)
    assert _config_json(tmp_path / "r") == json.loads(json.dumps(dataclasses.asdict(config)))
    assert TrainConfig.from_dict(load_checkpoint(tmp_path / "r" / "checkpoint.pt")["config"]) == config
