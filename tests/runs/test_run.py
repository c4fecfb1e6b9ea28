"""Training, resuming, checkpoints and the errors around them, on the embedded Fashion-MNIST subset."""
import json

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.conventions import check_pair
from ppl_vae.estimators import elbo
from ppl_vae.runs import load_run, train_run
from ppl_vae.runs.checkpoint import CheckpointError, load_checkpoint
from ppl_vae.runs.config import TrainConfig
from ppl_vae.training.trainer import Trainer, TrainingDiverged

SMALL = dict(z_dim=8, hidden=(64,), batch_size=100, valid_size=500)


@pytest.mark.parametrize("objective", ["trace", "meanfield", "iwae"])
def test_training_improves_test_elbo(tmp_path, float32, objective):
    config = TrainConfig(epochs=0, elbo=objective, k=5 if objective == "iwae" else 1, **SMALL)
    untrained = train_run(config, tmp_path / "a", progress=False)
    test_x = untrained.splits().test.x[:300]
    torch.manual_seed(0)
    before = elbo(untrained.model, untrained.guide, test_x, num_samples=5).mean
    trained = train_run(config.replace(epochs=2), tmp_path / "a", resume=True, progress=False)
    torch.manual_seed(0)
    after = elbo(trained.model, trained.guide, test_x, num_samples=5).mean
    assert after > before + 100, (before, after)  # ~ -545 -> ~ -330 nats in 2 epochs
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert history["epoch"] == [1, 2] and history["valid_elbo"][1] > history["valid_elbo"][0]


def test_resume_continues_the_same_run(tmp_path, float32):
    config = TrainConfig(epochs=3, **SMALL)
    straight = train_run(config, tmp_path / "straight", progress=False)
    train_run(config.replace(epochs=2), tmp_path / "resumed", progress=False)
    resumed = train_run(config, tmp_path / "resumed", resume=True, progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert straight.history["train_elbo"] == pytest.approx(resumed.history["train_elbo"], abs=1e-4)


def test_checkpoint_roundtrip_gives_identical_evaluation(tmp_path, float32):
    run = train_run(TrainConfig(epochs=1, **SMALL), tmp_path / "r", progress=False)
    loaded = load_run(tmp_path / "r")
    x = run.splits().test.x[:100]
    values = []
    for r in (run, loaded):
        torch.manual_seed(5)
        values.append(elbo(r.model, r.guide, x, num_samples=3).per_point)
    assert torch.equal(values[0], values[1])


def test_refuses_to_overwrite_a_run(tmp_path, float32):
    train_run(TrainConfig(epochs=1, **SMALL), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        train_run(TrainConfig(epochs=1, **SMALL), tmp_path / "r", progress=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_corrupt_checkpoint_is_reported(tmp_path, float32, damage):
    train_run(TrainConfig(epochs=1, **SMALL), tmp_path / "r", progress=False)
    path = tmp_path / "r" / "checkpoint.pt"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a ppl_vae checkpoint"):
        load_run(tmp_path / "r")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, float32, monkeypatch):
    config = TrainConfig(epochs=1, **SMALL)
    train_run(config, tmp_path / "r", progress=False)
    good = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    calls = {"n": 0}
    original = Trainer.step

    def poisoned(self, x, idx=None):
        calls["n"] += 1
        if calls["n"] == 10:  # the learning rate "explodes" mid-epoch: the encoder's weights become NaN (NaN data
            with torch.no_grad():  # would be refused as a data error before any loss)
                next(self.guide.parameters()).fill_(float("nan"))
        return original(self, x, idx)

    monkeypatch.setattr(Trainer, "step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 55.*last good checkpoint \(epoch 1\)"):
        train_run(config.replace(epochs=3), tmp_path / "r", resume=True, progress=False)
    kept = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert kept["epoch"] == 1
    for k, v in good["model"].items():
        assert torch.equal(kept["model"][k], v)


def test_nan_step_does_not_touch_parameters():
    model = torch.nn.Linear(1, 1)

    def m(x, idx=None):
        pyro.module("linear", model)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(model(x).squeeze(-1), 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x[:, 0])

    def g(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    trainer = Trainer(m, g, pyro.infer.Trace_ELBO(), lr=0.1)
    trainer.step(torch.ones(4, 1))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TrainingDiverged):
        trainer.step(torch.full((4, 1), float("nan")))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_guide_without_model_sites_is_rejected():
    from ppl_vae.models import BernoulliVAE

    model = BernoulliVAE(z_dim=4, hidden=(8,))

    def wrong_guide(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", dist.Normal(torch.zeros(x.shape[0], 4), 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"missing from the guide: \['z'\]; not in the model: \['latent'\]"):
        check_pair(model, wrong_guide, torch.zeros(3, 784))

    def wrong_shape(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 3), 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"shapes disagree at site 'z': guide \(3, 3\) vs model \(3, 4\)"):
        check_pair(model, wrong_shape, torch.zeros(3, 784))


def test_global_latent_is_rejected():
    from ppl_vae.conventions import latent_sites

    def model(x, idx=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(w, 1.0), obs=x)

    with pytest.raises(ValueError, match="Latent site 'w' is not inside pyro.plate"):
        latent_sites(model, torch.zeros(3))


def test_bad_config():
    with pytest.raises(ValueError, match="Unknown elbo 'renyi'"):
        TrainConfig(elbo="renyi")
    with pytest.raises(ValueError, match="Expected batch_size >= 1"):
        TrainConfig(batch_size=0)
