"""Data-parallel training under ``torchrun`` (``gloo``, two processes on this machine): it trains what one process
trains on the same batches, a 2-process resume equals an uninterrupted 2-process run bitwise, only rank 0 writes,
a NaN stops every process, and what cannot be split is refused by name. The block draws of
:class:`GlobalBatchNoise` are checked in this process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from ppl_vae.cli import main
from ppl_vae.runs import TrainConfig, build_guide, build_model, load_checkpoint
from ppl_vae.training.distributed import GlobalBatchNoise, share
from tests.fixtures_runs import default_float32, fake_idx_dataset

AUDITED = Path(__file__).with_name("audited_cli.py")
TINY = ["--dataset", "mnist", "--z-dim", "2", "--hidden", "16", "--batch-size", "18", "--quiet"]  # 54 points: 3 steps


def _guide_draws(guide, x, idx, block=None):
    """The guide's sample sites on ``x`` (seed 0), or on its ``block`` of rows drawn as the whole batch would be."""
    pyro.set_rng_seed(0)
    if block is None:
        return poutine.trace(guide).get_trace(x, idx)
    start, stop = block
    with GlobalBatchNoise(start, stop - start, x.shape[0]):
        return poutine.trace(guide).get_trace(x[start:stop], idx[start:stop])


@pytest.mark.parametrize("kind", ["amortized", "flow", "ffg"])
def test_a_block_draws_the_rows_of_the_whole_batch(kind):
    config = TrainConfig(z_dim=3, hidden=(8,), guide=kind)
    x = torch.rand(7, 784).bernoulli()
    idx = torch.arange(7)
    model = build_model(config, 784)
    guide = build_guide(config, model, x[:2], 7)
    whole = _guide_draws(guide, x, idx)
    for rank in range(2):
        start, stop = share(7, rank, 2)
        part = _guide_draws(guide, x, idx, (start, stop))
        for name, site in whole.nodes.items():
            if site["type"] == "sample" and name != "data":  # the same noise; the encoder's matmul rounds by its batch shape (float64)
                torch.testing.assert_close(part.nodes[name]["value"], site["value"][start:stop], rtol=1e-12,
                                           atol=1e-12, msg=f"{kind} {name} {rank}")
    alone = _guide_draws(guide, x[3:], idx[3:])  # without it, the second block draws the first rows' noise
    assert not torch.allclose(alone.nodes["z"]["value"], whole.nodes["z"]["value"][3:], atol=1e-3)


def test_a_block_draws_the_rows_of_vectorized_particles():
    config = TrainConfig(z_dim=3, hidden=(8,))
    x = torch.rand(5, 784).bernoulli()
    guide = build_guide(config, build_model(config, 784), x[:2])

    def particles(x, idx):
        with pyro.plate("particles", 4, dim=-2):
            return guide(x, idx)

    whole = _guide_draws(particles, x, torch.arange(5)).nodes["z"]["value"]  # (4, 5, 3)
    part = _guide_draws(particles, x, torch.arange(5), (2, 5)).nodes["z"]["value"]
    torch.testing.assert_close(part, whole[:, 2:5], rtol=1e-12, atol=1e-12)


def test_sites_that_cannot_be_split_are_refused_by_name():
    def global_latent(x):
        pyro.sample("theta", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    def gamma(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Gamma(torch.ones(x.shape[0]), 1.0))

    with pytest.raises(ValueError, match="the latent site 'theta' is outside it"), GlobalBatchNoise(0, 2, 4):
        global_latent(torch.zeros(2))
    with pytest.raises(ValueError, match=r"cannot split the draws of site 'z' \(Gamma\)"), GlobalBatchNoise(0, 2, 4):
        gamma(torch.zeros(2))


@pytest.mark.parametrize("options, message", [
    (dict(model="aae"), "--model aae under torchrun"),
    (dict(model="vqvae"), "--model vqvae under torchrun"),
    (dict(elbo="meanfield", free_bits=0.5), "--free-bits 0.5 under torchrun"),
    (dict(batch_size=1), "--batch-size 1 under torchrun with 2 processes"),
    (dict(batch_size=20), "--batch-size 20 leaves a last batch of 1 point"),
])
def test_what_data_parallel_training_cannot_honour_is_refused_by_name(options, message):
    assert message in TrainConfig(**options).data_parallel_problem(2, 61)
    assert TrainConfig(batch_size=20).data_parallel_problem(2, 62) is None  # a last batch of 2: one point each


def _torchrun(tmp_path, *argv, run, processes=2):
    """``ppl-vae`` under ``torchrun`` with ``processes`` processes; returns the completed process and what the
    ranks other than 0 wrote under ``run``."""
    audit = tmp_path / "audit"
    audit.mkdir(exist_ok=True)
    for old in audit.iterdir():
        old.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PPL_VAE_AUDIT_RUN": str(run), "PPL_VAE_AUDIT_OUT": str(audit)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", str(AUDITED), *argv],
                          capture_output=True, text=True, env=env, timeout=300)
    written = {p.name: json.loads(p.read_text()) for p in audit.iterdir() if p.name != "rank0.json"}
    assert len(written) == processes - 1 or done.returncode != 0, done.stderr[-2000:]
    return done, written


def _states(run: Path) -> dict:
    state = load_checkpoint(run / "checkpoint.pt")
    return {f"{part}.{k}": v for part in ("model", "guide") for k, v in state[part].items()}


@pytest.mark.slow
@pytest.mark.parametrize("guide", ["amortized", "ffg"])
def test_two_processes_train_what_one_trains_and_resume_bitwise(tmp_path, guide):
    data = fake_idx_dataset(tmp_path / "data")
    options = [*TINY, "--data-dir", str(data), "--guide", guide]
    with default_float32():
        assert main(["train", "--out", str(tmp_path / "one"), "--epochs", "2", *options]) == 0
    two = tmp_path / "two"
    done, written = _torchrun(tmp_path, "train", "--out", str(two), "--epochs", "2", *options, run=two)
    assert done.returncode == 0, done.stderr[-2000:]
    assert written == {"rank1.json": []}  # only rank 0 wrote in the run directory
    assert done.stdout.count("run saved in") == 1
    one = tmp_path / "one"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    # 6 Adam steps at lr 1e-3 (each moves a weight by about 1e-3): the gradient summed over two blocks differs
    # from the one-batch gradient by float32 rounding; measured at most 7e-7 apart
    a, b = _states(one), _states(two)
    assert list(a) == list(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-5, msg=name)
    h1, h2 = (json.loads((d / "history.json").read_text()) for d in (one, two))
    for key in ("train_elbo", "train_objective", "valid_elbo"):  # (a per-datapoint guide has no validation ELBO)
        assert (h2[key] == h1[key]) if None in h1[key] else (h2[key] == pytest.approx(h1[key], rel=1e-5)), key

    if guide != "amortized":
        return
    # interrupted after epoch 1 and resumed under torchrun: bitwise the uninterrupted 2-process run
    resumed = tmp_path / "resumed"
    done, written = _torchrun(tmp_path, "train", "--out", str(resumed), "--epochs", "1", *options, run=resumed)
    assert done.returncode == 0, done.stderr[-2000:]
    done, written = _torchrun(tmp_path, "train", "--out", str(resumed), "--epochs", "2", "--resume", "--quiet",
                              run=resumed)
    assert done.returncode == 0, done.stderr[-2000:]
    assert written == {"rank1.json": []}
    c, d = load_checkpoint(two / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    for part in ("model", "guide"):
        for k in c[part]:
            assert torch.equal(c[part][k], d[part][k]), (part, k)
    for k, v in c["optimizer"]["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(t, d["optimizer"]["optimizer"]["state"][k][name]), (k, name)
    assert all(torch.equal(x, y) for x, y in zip(c["rng"]["generators"], d["rng"]["generators"]))
    assert torch.equal(c["rng"]["torch"], d["rng"]["torch"])
    hc, hd = c["history"], d["history"]
    assert {k: v for k, v in hc.items() if k != "seconds"} == {k: v for k, v in hd.items() if k != "seconds"}


@pytest.mark.slow
def test_a_nan_stops_every_process_and_keeps_the_last_good_checkpoint(tmp_path):
    data = fake_idx_dataset(tmp_path / "data")
    run = tmp_path / "run"
    done, _ = _torchrun(tmp_path, "train", "--out", str(run), "--epochs", "3", *TINY, "--data-dir", str(data),
                        "--lr", "1e30", run=run)
    assert done.returncode != 0
    assert "ppl-vae train: error: The" in done.stderr and "the last good checkpoint (epoch 0) is kept" in done.stderr
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 0


@pytest.mark.slow
def test_a_model_that_cannot_be_split_is_refused_under_torchrun(tmp_path):
    data = fake_idx_dataset(tmp_path / "data")
    run = tmp_path / "run"
    done, _ = _torchrun(tmp_path, "train", "--out", str(run), "--epochs", "1", *TINY, "--data-dir", str(data),
                        "--model", "vaegan", run=run)
    assert done.returncode != 0
    assert "ppl-vae train: error: --model vaegan under torchrun" in done.stderr
    assert not run.exists()  # refused before anything was written
