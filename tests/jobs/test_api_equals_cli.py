"""Each command is a thin parser over one library function: the command line and the Python API give identical
files, byte for byte."""
import json

import pytest
import torch

import ppl_vae
from ppl_vae.cli import main
from ppl_vae.jobs import evaluate_run, gap_over_training, gap_run, plot_run, posterior_run, save_gap_over_training, save_gap_report
from tests.fixtures_runs import fake_idx_dataset, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    data = fake_idx_dataset(root / "data")
    return train_tiny(root / "run", data, "--epochs", "2", "--keep-every", "1")


def test_evaluate(run, tmp_path, float32):
    cli, api = tmp_path / "cli.json", tmp_path / "api.json"
    assert main(["evaluate", run, "--n", "8", "--samples", "3", "--iwae", "40", "--ais", "--ais-steps", "4",
                 "--ais-chains", "2", "--prior-mc", "30", "--seed", "3", "--quiet", "--out", str(cli)]) == 0
    result = evaluate_run(run, "test", 8, num_samples=3, iwae_samples=40, ais_steps=4, ais_chains=2, prior_mc_samples=30,
                          seed=3)
    result.save(api)
    assert cli.read_bytes() == api.read_bytes()
    report = json.loads(api.read_text())
    assert report["run"] == run and report["split"] == "test" and report["num_points"] == 8
    assert list(report["estimates"]) == ["elbo", "iwae_40", "ais_4", "prior_mc_30", "log_p_hat"]
    chosen = result["log_p_hat"].info["from"]  # one estimator for the study, chosen on independent pilots
    assert chosen in ("iwae_40", "ais_4") and torch.equal(result["log_p_hat"].per_point, result[chosen].per_point)


def test_evaluate_bdmc(run, tmp_path, float32):
    cli, api = tmp_path / "cli.json", tmp_path / "api.json"
    assert main(["evaluate", run, "--n", "3", "--bdmc", "--ais-steps", "3", "--ais-chains", "2", "--ais-leapfrog", "2",
                 "--quiet", "--out", str(cli)]) == 0
    result = evaluate_run(run, "test", 3, bdmc_steps=3, ais_chains=2, ais_leapfrog=2)
    result.save(api)
    assert cli.read_bytes() == api.read_bytes()
    report = json.loads(api.read_text())
    assert list(report["estimates"]) == ["elbo"]  # --bdmc alone runs no AIS on the data
    bdmc = report["bdmc"]
    assert bdmc["num_steps"] == 3 and bdmc["num_chains"] == 2 and len(bdmc["lower"]["per_point"]) == 3
    assert bdmc["gap"]["mean"] == pytest.approx(bdmc["upper"]["mean"] - bdmc["lower"]["mean"], abs=1e-3)  # float32
    assert "upper - lower" in result.table() and "simulated from the model" in result.table()


def test_evaluate_defaults_write_into_the_run(run, float32):
    assert main(["evaluate", run, "--n", "5", "--quiet"]) == 0
    written = json.loads((ppl_vae.load_run(run).path / "evaluation_test.json").read_text())
    assert written == evaluate_run(run, n=5).to_dict()


def test_gap(run, tmp_path, float32):
    options = ["--n", "4", "--eval-samples", "30", "--max-steps", "15", "--families", "ffg", "--seed", "1", "--quiet"]
    assert main(["gap", run, "--split", "train", "test", "--out", str(tmp_path / "cli"), *options]) == 0
    report = gap_run(run, ("train", "test"), 4, families=("ffg",), eval_samples=30, max_steps=15, seed=1)
    written = save_gap_report(report, tmp_path / "api")
    assert sorted(p.name for p in written) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    for name in ("gap_train_test.json", "gap_train_test.md"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes(), name


def test_gap_over_training(run, tmp_path, float32):
    options = ["--n", "3", "--eval-samples", "20", "--max-steps", "10", "--families", "ffg", "--quiet"]
    assert main(["gap", run, "--over-training", "--out", str(tmp_path / "cli"), *options]) == 0
    result = gap_over_training(run, "test", 3, families=("ffg",), eval_samples=20, max_steps=10)
    save_gap_over_training(result, tmp_path / "api")
    assert result.epochs == [1, 2]
    for name in ("gap_over_training.json", "gap_over_training.md"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes(), name


@pytest.mark.slow  # NUTS and ArviZ's figures, twice: about 12 s on 2 cores
def test_posterior(run, tmp_path, float32):
    assert main(["posterior", run, "--points", "0", "2", "--guides", "amortized", "ffg", "nuts", "--chains", "2",
                 "--draws", "10", "--warmup", "10", "--max-steps", "10", "--quiet", "--out", str(tmp_path / "cli")]) == 0
    report = posterior_run(run, (0, 2), guides=("amortized", "ffg", "nuts"), chains=2, draws=10, warmup=10, max_steps=10)
    written = report.save(tmp_path / "api")
    assert sorted(p.name for p in written) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert (tmp_path / "cli" / "diagnostics.json").read_bytes() == (tmp_path / "api" / "diagnostics.json").read_bytes()
    assert (tmp_path / "cli" / "diagnostics.md").read_bytes() == (tmp_path / "api" / "diagnostics.md").read_bytes()
    import arviz as az

    cli = az.from_netcdf(str(tmp_path / "cli" / "posterior.nc"))
    assert cli.posterior.equals(report.idata.posterior)


def test_plot(run, tmp_path, float32):
    assert main(["plot", run, "--n", "10", "--out", str(tmp_path / "cli")]) == 0
    written = plot_run(run, tmp_path / "api", n=10)
    assert [p.name for p in written] == ["prior_samples.png", "elbo_curves.png", "reconstructions.png", "latent_space.png",
                                         "kl_per_dimension.png"]
    assert sorted(p.name for p in written) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    for p in written:
        assert p.stat().st_size > 3000


def test_plot_of_a_run_on_32_by_32_images(tmp_path, float32):
    """Images of another size than 28 x 28 train, evaluate and plot (the figures tile images of any square size)."""
    from tests.fixtures_runs import fake_idx_dataset

    run = train_tiny(tmp_path / "run", fake_idx_dataset(tmp_path / "data", side=32))
    assert main(["evaluate", run, "--n", "5", "--quiet"]) == 0
    assert main(["plot", run, "--n", "10"]) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "figures").iterdir()) == [
        "elbo_curves.png", "kl_per_dimension.png", "latent_space.png", "prior_samples.png", "reconstructions.png"]
