"""The command line, end to end with a tiny budget."""
import json

import pytest

from ppl_vae.cli import main


def test_train_evaluate_plot(tmp_path, float32, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--out", run, "--epochs", "1", "--z-dim", "2", "--hidden", "32", "--quiet"]) == 0
    assert main(["evaluate", run, "--n", "50", "--samples", "2", "--iwae", "20", "--ais", "--ais-steps", "10",
                 "--ais-chains", "2", "--prior-mc", "10", "--quiet"]) == 0
    report = json.loads((tmp_path / "run" / "evaluation_test.json").read_text())
    est = report["estimates"]
    assert len(est["elbo"]["per_point"]) == 50
    assert est["elbo"]["mean"] <= est["iwae_20"]["mean"] + 1.0
    assert set(est) == {"elbo", "iwae_20", "ais_10", "prior_mc_10", "log_p_hat"}
    chosen = est["log_p_hat"]["from"]  # chosen for the study on independent pilots, never a per-point maximum
    assert chosen in ("iwae_20", "ais_10") and est["log_p_hat"]["per_point"] == est[chosen]["per_point"]
    assert main(["plot", run, "--n", "200"]) == 0
    for name in ("prior_samples", "reconstructions", "latent_space", "elbo_curves"):
        assert (tmp_path / "run" / "figures" / f"{name}.png").stat().st_size > 5000


def test_errors_are_reported_not_raised(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"\x00" * 10)
    assert main(["evaluate", str(tmp_path / "bad")]) == 1  # a corrupt file: a runtime failure
    assert "truncated or corrupt" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--device", "cuda:7", "--quiet"]) == 2
    assert "cuda:7" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_missing_dataset_cli(tmp_path, monkeypatch, capsys):
    from ppl_vae.data import sources

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setattr(sources, "find_dataset", _no_download(sources.find_dataset))
    assert main(["train", "--out", str(tmp_path / "r"), "--dataset", "mnist", "--data-dir", str(tmp_path), "--quiet"]) == 1
    assert "Dataset 'mnist' not found" in capsys.readouterr().err


def _no_download(find):
    def wrapped(name, data_dir=None, download=True):
        return find(name, data_dir, download=False)

    return wrapped


def test_gap_command_tables_and_figures(tmp_path, float32):
    run = str(tmp_path / "run")
    assert main(["train", "--out", run, "--epochs", "2", "--z-dim", "4", "--hidden", "32", "--guide", "flow",
                 "--keep-every", "1", "--quiet"]) == 0
    assert main(["gap", run, "--split", "train", "test", "--n", "12", "--eval-samples", "100", "--max-steps", "150",
                 "--quiet"]) == 0
    gap_dir = tmp_path / "run" / "gap"
    report = json.loads((gap_dir / "gap_train_test.json").read_text())
    test = report["columns"]["test (12 points)"]
    assert test["encoder_family"] == "flow"
    s = test["summary"]
    total = s["Approximation gap"]["mean"] + s["Amortization gap"]["mean"]
    assert total == pytest.approx(s["Inference gap"]["mean"], abs=1e-6)
    assert s["log p̂(x)"]["mean"] >= s["L[q]"]["mean"]
    md = (gap_dir / "gap_train_test.md").read_text()
    assert "| Amortization gap |" in md and "train (12 points)" in md and "| gaps measured with | q*_Flow | q*_Flow |" in md
    assert (gap_dir / "gap_train_test.png").stat().st_size > 5000
    assert (gap_dir / "semi_amortized_train.png").stat().st_size > 5000
    assert main(["gap", run, "--n", "6", "--eval-samples", "50", "--max-steps", "50", "--over-training",
                 "--families", "ffg", "--quiet"]) == 0
    over = json.loads((gap_dir / "gap_over_training.json").read_text())
    assert over["epochs"] == [1, 2]


def test_train_with_per_datapoint_guide(tmp_path, float32, capsys):
    run = str(tmp_path / "ffg")
    assert main(["train", "--out", run, "--epochs", "1", "--z-dim", "4", "--hidden", "32", "--guide", "ffg", "--quiet"]) == 0
    assert main(["evaluate", run, "--split", "train", "--n", "20", "--quiet"]) == 0
    assert main(["evaluate", run, "--n", "20", "--quiet"]) == 2
    assert "per-datapoint" in capsys.readouterr().err
    assert main(["plot", run, "--n", "100"]) == 0


def test_posterior_command(tmp_path, float32):
    import arviz as az

    run = str(tmp_path / "run")
    assert main(["train", "--out", run, "--epochs", "1", "--z-dim", "2", "--hidden", "32", "--quiet"]) == 0
    assert main(["posterior", run, "--points", "0", "3", "--guides", "amortized", "ffg", "flow", "nuts", "--chains", "2",
                 "--draws", "60", "--warmup", "60", "--max-steps", "100", "--quiet"]) == 0
    out = tmp_path / "run" / "posterior"
    idata = az.from_netcdf(str(out / "posterior.nc"))
    assert set(idata.posterior.data_vars) == {"z_amortized", "z_ffg", "z_flow", "z_nuts"}
    assert idata.posterior.coords["datapoint"].values.tolist() == [0, 3]
    assert "| 3 | nuts |" in (out / "diagnostics.md").read_text()
    for name in ("forest", "pair", "nuts_posterior", "posterior_grid", "manifold"):
        assert (out / f"{name}.png").stat().st_size > 5000, name
    assert main(["posterior", run, "--points", "5000"]) == 2


@pytest.mark.parametrize("model", ["ae", "vqvae", "vaegan", "aae"])
def test_train_every_zoo_model(tmp_path, float32, model):
    run = str(tmp_path / model)
    size = [] if model == "vqvae" else ["--z-dim", "4"]  # the VQ-VAE's code is not sized by --z-dim (refused)
    assert main(["train", "--out", run, "--model", model, "--epochs", "2", *size, "--hidden", "32", "--quiet"]) == 0
    history = json.loads((tmp_path / model / "history.json").read_text())
    if model != "vqvae":  # (the VQ-VAE's codebook terms spike early; tests/models/test_vqvae.py checks its training)
        assert history["train_elbo"][1] > history["train_elbo"][0]  # the (reconstruction) objective improves
    assert all(v is not None for v in history["train_elbo"])
    assert main(["evaluate", run, "--n", "20", "--quiet"]) == 0
    assert "not a bound" in json.loads((tmp_path / model / "evaluation_test.json").read_text())["note"]
    assert main(["plot", run, "--n", "50"]) == 0
    assert (tmp_path / model / "figures" / "prior_samples.png").exists()


def test_warmup_and_free_bits_runs_log_collapse_diagnostics(tmp_path, float32, capsys):
    run = str(tmp_path / "wu")
    assert main(["train", "--out", run, "--epochs", "2", "--z-dim", "6", "--hidden", "32", "--warmup-steps", "60",
                 "--quiet"]) == 0
    history = json.loads((tmp_path / "wu" / "history.json").read_text())
    assert len(history["kl_per_dim"]) == 2 and len(history["kl_per_dim"][0]) == 6
    assert 0 <= history["active_units"][-1] <= 6
    assert main(["plot", run]) == 0
    assert (tmp_path / "wu" / "figures" / "kl_per_dimension.png").exists()
    assert main(["train", "--out", str(tmp_path / "fb"), "--epochs", "1", "--z-dim", "6", "--hidden", "32",
                 "--free-bits", "0.5", "--elbo", "meanfield", "--quiet"]) == 0
    assert main(["train", "--out", str(tmp_path / "bad"), "--model", "ae", "--beta", "2", "--quiet"]) == 2
    assert "apply to --model vae only" in capsys.readouterr().err


# -- manners: version, exit statuses, --debug, Ctrl-C, messages --------------------------------------------------

def test_version(capsys):
    import ppl_vae

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"ppl-vae {ppl_vae.__version__}\n"


def test_usage_errors_are_one_line_with_status_2(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err == "ppl-vae: error: the following arguments are required: command\n"
    assert main(["train", "--out", "x", "--valid-size", "abc"]) == 2
    assert capsys.readouterr().err == ("ppl-vae train: error: argument --valid-size: expected a count (5000) or a "
                                       "fraction in [0, 1) (0.1), got 'abc'\n")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.fixtures_runs import fake_idx_dataset, train_tiny

    root = tmp_path_factory.mktemp("tiny")
    return train_tiny(root / "run", fake_idx_dataset(root / "data"))


def test_debug_shows_the_traceback(tiny_run, tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"\x00" * 10)
    assert main(["evaluate", str(tmp_path / "bad")]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "bad"), "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.splitlines()[-1].startswith("ppl-vae evaluate: error: Checkpoint")
    assert main(["--debug", "evaluate", str(tmp_path / "bad")]) == 1  # before or after the command
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_with_status_1(tiny_run, monkeypatch, capsys):
    from ppl_vae import jobs

    def broken(*args, **kwargs):
        raise KeyError("something internal")

    monkeypatch.setattr(jobs, "evaluate_run", broken)
    assert main(["evaluate", tiny_run, "--quiet"]) == 1
    assert capsys.readouterr().err == ("ppl-vae evaluate: error: unexpected KeyError: 'something internal' (rerun with "
                                       "--debug for the traceback)\n")


def test_ctrl_c_during_training_names_the_checkpoint_and_how_to_resume(tmp_path, monkeypatch, capsys, float32):
    """A raw KeyboardInterrupt before; now one line saying which checkpoint is kept, and the command to resume,
    which then works."""
    from ppl_vae.training.trainer import Trainer
    from tests.fixtures_runs import fake_idx_dataset

    data = fake_idx_dataset(tmp_path / "data")
    real, calls = Trainer.train_epoch, []

    def interrupted_in_epoch_3(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_3)
    run = str(tmp_path / "run")
    argv = ["train", "--out", run, "--dataset", "mnist", "--data-dir", str(data), "--epochs", "4", "--z-dim", "2",
            "--hidden", "8", "--batch-size", "30", "--quiet"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err == (f"ppl-vae train: interrupted; the checkpoint of epoch 2 is kept in {run}/checkpoint.pt; continue "
                   f"with: ppl-vae train --out {run} --epochs 4 --resume\n")
    assert main([*argv, "--resume"]) == 0
    assert json.loads((tmp_path / "run" / "history.json").read_text())["epoch"] == [1, 2, 3, 4]


def test_ctrl_c_in_a_job_writes_nothing(tiny_run, tmp_path, monkeypatch, capsys):
    from ppl_vae.jobs import gap as gap_job

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gap_job, "plot_gap_bars", interrupt)  # after the JSON and Markdown files are staged
    out = tmp_path / "gap"
    assert main(["gap", tiny_run, "--n", "2", "--eval-samples", "10", "--max-steps", "5", "--families", "ffg",
                 "--out", str(out), "--quiet"]) == 130
    assert capsys.readouterr().err == "ppl-vae gap: interrupted; nothing was written\n"
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no staging directory left behind either


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")])
def test_a_full_or_read_only_disk_is_a_runtime_error_and_leaves_no_file(tiny_run, tmp_path, monkeypatch, capsys, error):
    """As root the tests cannot make a directory read-only; the file system's refusal is simulated where the files are
    moved into place (os.replace), after they were written."""
    import os

    real = os.replace

    def refuse(src, dst):
        raise type(error)(error.errno, error.strerror, str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    assert main(["evaluate", tiny_run, "--n", "3", "--out", str(tmp_path / "e.json"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"ppl-vae evaluate: error: [Errno {error.errno}] {error.strerror}: '{tmp_path / 'e.json'}'\n"
    assert main(["plot", tiny_run, "--out", str(tmp_path / "fig")]) == 1
    assert capsys.readouterr().err.startswith(f"ppl-vae plot: error: [Errno {error.errno}] {error.strerror}: '{tmp_path / 'fig'}")
    monkeypatch.setattr(os, "replace", real)
    assert list(tmp_path.iterdir()) == []  # neither a partial file nor a staging directory


def test_messages_go_through_logging(tmp_path, capsys, caplog, float32):
    """The library logs (the per-epoch line, the files written); the command shows them on stderr unless --quiet."""
    import logging

    from tests.fixtures_runs import fake_idx_dataset

    data = fake_idx_dataset(tmp_path / "data")
    argv = ["train", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1", "--z-dim", "2", "--hidden", "8"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    with caplog.at_level(logging.INFO, logger="ppl_vae"):
        assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "epoch 1: train ELBO" in err
    assert any(r.name == "ppl_vae.runs.run" and r.getMessage().startswith("epoch 1: train ELBO") for r in caplog.records)
    assert main(["evaluate", str(tmp_path / "b"), "--n", "3", "--debug"]) == 0
    assert f"ppl_vae.jobs.outputs: wrote {tmp_path / 'b' / 'evaluation_test.json'}" in capsys.readouterr().err


def test_training_from_python_prints_nothing(tmp_path, capsys, float32):
    from ppl_vae.runs import TrainConfig, train_run
    from tests.fixtures_runs import fake_idx_dataset

    config = TrainConfig(dataset="mnist", data_dir=str(fake_idx_dataset(tmp_path / "data")), z_dim=2, hidden=(8,), epochs=1)
    train_run(config, tmp_path / "run", progress=False)
    assert capsys.readouterr() == ("", "")


def test_ctrl_c_with_the_librarys_own_message(tiny_run, monkeypatch, capsys):
    """An interruption that says what was kept (a KeyboardInterrupt with a message) is shown as it is."""
    from ppl_vae import jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("the checkpoint of epoch 3 is kept in RUN/checkpoint.pt")

    monkeypatch.setattr(jobs, "evaluate_run", interrupted)
    assert main(["evaluate", tiny_run, "--quiet"]) == 130
    assert capsys.readouterr().err == "ppl-vae evaluate: interrupted; the checkpoint of epoch 3 is kept in RUN/checkpoint.pt\n"
