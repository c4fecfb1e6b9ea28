"""A training run trains what its options say (or refuses them by name), logs what it trained, never commits a bad
step, and says what to do when interrupted."""
import copy
import logging

import pytest
import torch

from ppl_vae.cli import main
from ppl_vae.data import load_splits, make_loader
from ppl_vae.objectives import AnnealedELBO, FreeBitsELBO
from ppl_vae.runs import TrainConfig, TrainingInterrupted, build_model, build_objective, load_checkpoint, train_run
from ppl_vae.runs.checkpoint import nonfinite_entries
from ppl_vae.runs.zoo import build_trainer
from ppl_vae.training import Trainer, TrainingDiverged, VQVAETrainer, train_vqvae

SMALL = dict(z_dim=3, hidden=(16,), batch_size=250, valid_size=3500)


pytestmark = pytest.mark.usefixtures("one_thread")


REFUSED = [
    (dict(elbo="iwae", k=5, beta=4.0), "--elbo iwae cannot be combined with --beta"),
    (dict(elbo="iwae", k=5, warmup_steps=10), "--elbo iwae cannot be combined with --beta, --warmup-steps"),
    (dict(elbo="iwae", k=5, cycle_steps=10), "--elbo iwae cannot be combined"),
    (dict(elbo="iwae", free_bits=0.5), "--free-bits cannot be combined with --elbo iwae"),
    (dict(free_bits=0.5), "--free-bits floors the analytic KL .* got --elbo trace: pass --elbo meanfield"),
    (dict(warmup_steps=10, cycle_steps=10), "--warmup-steps 10 and --cycle-steps 10 are two KL schedules"),
    (dict(gamma=2.0), "--gamma 2.0 applies to --model vaegan only"),
    (dict(model="vqvae", z_dim=4), "--z-dim 4 does not apply to --model vqvae"),
    (dict(model="aae", k=3), "--k 3 applies to --model vae and ae only"),
    (dict(model="ae", elbo="meanfield"), "--elbo meanfield applies to --model vae only"),
    (dict(guide="ffg", flow="planar"), "--flow and --num-flows apply to --guide flow only"),
    (dict(free_bits=float("nan"), elbo="meanfield"), "Expected free_bits to be finite, got nan"),
    (dict(lr=float("inf")), "Expected lr to be finite, got inf"),
    (dict(lr=0.0), "Expected lr > 0, got 0.0"),
]


@pytest.mark.parametrize("options, message", REFUSED)
def test_options_that_cannot_be_honoured_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


def test_options_that_compose_build_the_composed_objective():
    objective = build_objective(TrainConfig(free_bits=0.5, elbo="meanfield", warmup_steps=10, beta=2.0))
    assert isinstance(objective, AnnealedELBO) and isinstance(objective.elbo, FreeBitsELBO)
    assert objective.schedule(10) == 2.0 and objective.elbo.free_bits_per_dim == 0.5


def test_cli_refuses_a_combination_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--elbo", "iwae", "--beta", "4", "--quiet"]) == 2
    assert "--elbo iwae cannot be combined with --beta" in capsys.readouterr().err
    assert not out.exists()


def test_history_logs_the_true_elbo_and_the_trained_objective_by_name(tmp_path, float32):
    run = train_run(TrainConfig(epochs=2, beta=4.0, **SMALL), tmp_path / "b", progress=False)
    h = run.history
    assert h["objective"] == "ELBO (Trace_ELBO, K=1) with the KL weighted by beta = 4.0"
    # beta = 4 penalizes the KL 4 times: the trained objective lies below the ELBO by 3 KL terms (> 0)
    assert all(o < e - 0.5 for o, e in zip(h["train_objective"], h["train_elbo"]))
    plain = train_run(TrainConfig(epochs=1, **SMALL), tmp_path / "p", progress=False).history
    assert plain["train_objective"] == plain["train_elbo"] and plain["objective"] == "ELBO (Trace_ELBO, K=1)"
    iwae = train_run(TrainConfig(epochs=1, elbo="iwae", k=5, **SMALL), tmp_path / "i", progress=False).history
    assert iwae["objective"] == "IWAE bound (K=5)" and iwae["train_objective"][0] > iwae["train_elbo"][0]


def test_valid_size_0_names_the_split_it_evaluates(tmp_path, float32, caplog):
    with caplog.at_level(logging.INFO, logger="ppl_vae"):
        run = train_run(TrainConfig(epochs=1, **dict(SMALL, valid_size=0)), tmp_path / "r", progress=False)
    assert run.history["valid_split"] == "test" and "valid_elbo" not in run.history
    assert len(run.history["test_elbo"]) == 1
    assert any("test ELBO" in r.getMessage() for r in caplog.records)
    assert main(["plot", str(tmp_path / "r")]) == 0


@pytest.mark.parametrize("guide", ["ffg", "amortized", "flow"])
def test_an_enormous_learning_rate_stops_with_the_documented_error(tmp_path, float32, guide):
    """The issue's `--guide ffg --batch-size 10 --lr 1e38`: no bad step is committed, the checkpoint stays finite."""
    config = TrainConfig(epochs=2, guide=guide, lr=1e38, **dict(SMALL, batch_size=10))
    with pytest.raises(TrainingDiverged, match=r"at step \d+.*Epoch 1 abandoned; the last good checkpoint \(epoch 0\)"):
        train_run(config, tmp_path / "r", progress=False)
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert state["epoch"] == 0 and nonfinite_entries(state) == []


def test_the_validation_pass_of_a_diverged_encoder_gives_the_documented_error(tmp_path, float32, monkeypatch):
    """Finite but enormous encoder weights make the validation ELBO's distributions invalid: Pyro's validation error
    becomes TrainingDiverged naming the parameter, and the epoch is not committed."""
    config = TrainConfig(epochs=2, **SMALL)
    train_run(config.replace(epochs=1), tmp_path / "r", progress=False)
    original = Trainer.train_epoch

    def blown_up(self, loader, progress=None):
        out = original(self, loader, progress)
        with torch.no_grad():
            for p in self.guide.parameters():
                p.mul_(1e30)
        return out

    monkeypatch.setattr(Trainer, "train_epoch", blown_up)
    with pytest.raises(TrainingDiverged, match=r"valid ELBO became nan.*Expected parameter loc.*last good checkpoint \(epoch 1\)"):
        train_run(config, tmp_path / "r", resume=True, progress=False)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1


def test_ctrl_c_says_which_checkpoint_is_kept_and_how_to_resume(tmp_path, float32, monkeypatch, capsys):
    calls = {"n": 0}
    original = Trainer.step

    def interrupted(self, x, idx=None):
        calls["n"] += 1
        if calls["n"] == 8:  # during epoch 2 (6 steps per epoch)
            raise KeyboardInterrupt
        return original(self, x, idx)

    monkeypatch.setattr(Trainer, "step", interrupted)
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--epochs", "3", "--z-dim", "3", "--hidden", "16", "--batch-size", "250",
                 "--valid-size", "3500", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err == (f"ppl-vae train: interrupted; the checkpoint of epoch 1 is kept in {out / 'checkpoint.pt'}; "
                   f"continue with: ppl-vae train --out {out} --epochs 3 --resume\n")
    calls["n"] = 0  # resumed at epoch 1: epoch 2 is committed, then interrupted in epoch 3
    with pytest.raises(TrainingInterrupted, match="checkpoint of epoch 2"):
        train_run(TrainConfig(epochs=3, **SMALL), out, resume=True, progress=False)
    assert not list(out.glob(".*.tmp"))


def test_vqvae_run_and_train_vqvae_are_one_code_path(float32):
    """The CLI's VQ-VAE trainer uses the codebook learning rate of train_vqvae (10x), and both take identical steps."""
    config = TrainConfig(model="vqvae", hidden=(32,), lr=2e-3)
    torch.manual_seed(0)
    model = build_model(config, 784)
    twin = copy.deepcopy(model)
    trainer = build_trainer(config, model, None, None)
    assert isinstance(trainer, VQVAETrainer)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [2e-3, 2e-2]
    splits = load_splits(valid_size=4000)
    loader = make_loader(splits.train, 250, seed=1)
    torch.manual_seed(1)
    trainer.train_epoch(loader)
    loader = make_loader(splits.train, 250, seed=1)
    torch.manual_seed(1)
    train_vqvae(twin, loader, epochs=1, lr=2e-3)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)


def test_cli_options_left_out_take_trainconfig_defaults(tmp_path, float32, monkeypatch):
    seen = {}

    class Seen(Exception):
        pass

    def fake_train_run(config, run_dir, resume=False, progress=True):
        seen["config"] = config
        raise Seen

    monkeypatch.setattr("ppl_vae.runs.train_run", fake_train_run)
    assert main(["train", "--out", str(tmp_path / "r"), "--quiet"]) == 1  # the CLI reports what the library raised
    assert seen["config"] == TrainConfig()
