"""The bad-input matrix: every class of bad input, on the command line and in the Python API, gets a clear error
that names the option, argument or file — on the command line one line ``ppl-vae <command>: error: ...`` with
exit status 2 for usage errors and 1 for runtime failures — and nothing is written (the directory tree holding the
data, the runs and the outputs is unchanged). The README's table lists the same classes."""
from __future__ import annotations

import math
import re
import shutil

import pyro
import pytest
import torch

from ppl_vae.cli import main
from ppl_vae.data import DataError, load_raw, load_splits, write_idx
from ppl_vae.runs import CheckpointError, TrainConfig, load_run, train_run
from tests.fixtures_runs import default_float32, fake_idx_dataset, train_tiny, tree


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data sets good and bad, four runs, a file, a corrupt and a foreign checkpoint."""
    root = tmp_path_factory.mktemp("world")
    data = root / "data"
    ok = fake_idx_dataset(data / "ok")
    for name in ("corrupt_gz", "truncated", "mixed", "int8", "labels", "swap"):
        shutil.copytree(ok, data / name)
    corrupt = bytearray((data / "corrupt_gz" / "t10k-images-idx3-ubyte.gz").read_bytes())
    stream = corrupt.index(0, 10) + 1  # the deflate stream starts after the gzip header's file name
    corrupt[stream:stream + 4] = bytes(b ^ 0x55 for b in corrupt[stream:stream + 4])
    (data / "corrupt_gz" / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(corrupt))
    (data / "truncated" / "train-images-idx3-ubyte.gz").unlink()
    write_idx(data / "truncated" / "train-images-idx3-ubyte", torch.zeros(60, 28, 28, dtype=torch.uint8))
    raw = data / "truncated" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-100])
    write_idx(data / "mixed" / "t10k-images-idx3-ubyte.gz", torch.zeros(20, 32, 32, dtype=torch.uint8))
    write_idx(data / "int8" / "train-images-idx3-ubyte.gz", torch.zeros(60, 28, 28, dtype=torch.int8))
    write_idx(data / "labels" / "t10k-labels-idx1-ubyte", torch.zeros(19, dtype=torch.uint8))
    (data / "empty").mkdir()
    runs = root / "runs"
    paths = {
        "root": root, "ok": ok, "empty": data / "empty", "missing": root / "missing", "file": root / "file.txt",
        "run": train_tiny(runs / "vae", ok, "--valid-size", "0"),
        "ae": train_tiny(runs / "ae", ok, "--model", "ae"),
        "ffg": train_tiny(runs / "ffg", ok, "--guide", "ffg"),
        "swapped": train_tiny(runs / "swapped", data / "swap"),
        **{name: data / name for name in ("corrupt_gz", "truncated", "mixed", "int8", "labels")},
    }
    fake_idx_dataset(data / "swap", side=32)  # the run's data replaced by 32 x 32 images after training
    paths["file"].write_text("not a directory")
    (root / "bad_ckpt").mkdir()
    (root / "bad_ckpt" / "checkpoint.pt").write_bytes(b"\x00" * 10)
    (root / "foreign").mkdir()
    torch.save({"weights": torch.zeros(2)}, root / "foreign" / "checkpoint.pt")
    paths["bad_ckpt"], paths["foreign"] = root / "bad_ckpt", root / "foreign"
    return {k: str(v) for k, v in paths.items()}


TRAIN = ["train", "--out", "{root}/new", "--dataset", "mnist", "--data-dir", "{ok}", "--epochs", "1", "--z-dim", "2",
         "--hidden", "8", "--quiet"]
GAP = ["--n", "2", "--eval-samples", "10", "--max-steps", "5", "--families", "ffg", "--quiet"]
USAGE, RUNTIME = 2, 1

# (class of bad input, argv, exit status, the message after "ppl-vae <command>: error: ")
CLI_CASES = [
    # the command itself
    ("no command", [], USAGE, r"the following arguments are required: command"),
    ("unknown command", ["frobnicate"], USAGE, r"argument command: invalid choice: 'frobnicate'"),
    ("unknown option", [*TRAIN, "--frobnicate"], USAGE, r"unrecognized arguments: --frobnicate"),
    # train: where to write
    ("train --out names a file", [*TRAIN, "--out", "{file}"], USAGE, r"argument --out: '.*file.txt' is a file, expected a directory"),
    ("train --out under a file", [*TRAIN, "--out", "{file}/run"], USAGE, r"argument --out: .* lies under '.*file.txt', which is a file"),
    ("train --out holds a run, no --resume", [*TRAIN, "--out", "{run}"], USAGE, r"already holds a run"),
    ("train --resume without a run", [*TRAIN, "--resume"], USAGE, r"argument --resume: '.*new' holds no checkpoint.pt"),
    # train: values
    ("--device foo", [*TRAIN, "--device", "foo"], USAGE, r"argument --device: expected cpu, cuda, cuda:N or mps, got 'foo'"),
    ("--device cuda:7", [*TRAIN, "--device", "cuda:7"], USAGE, r"--device cuda:7 requested but"),
    ("--hidden -5", [*TRAIN, "--hidden", "-5"], USAGE, r"argument --hidden: expected an integer >= 1, got '-5'"),
    ("--hidden 0", [*TRAIN, "--hidden", "16", "0"], USAGE, r"argument --hidden: expected an integer >= 1, got '0'"),
    ("--z-dim 0", [*TRAIN, "--z-dim", "0"], USAGE, r"argument --z-dim: expected an integer >= 1, got '0'"),
    ("--epochs -1", [*TRAIN, "--epochs", "-1"], USAGE, r"argument --epochs: expected an integer >= 0, got '-1'"),
    ("--epochs abc", [*TRAIN, "--epochs", "abc"], USAGE, r"argument --epochs: expected an integer, got 'abc'"),
    ("--epochs 2.5", [*TRAIN, "--epochs", "2.5"], USAGE, r"argument --epochs: expected an integer, got '2.5'"),
    ("--batch-size 0", [*TRAIN, "--batch-size", "0"], USAGE, r"argument --batch-size: expected an integer >= 1"),
    ("--k 0", [*TRAIN, "--k", "0"], USAGE, r"argument --k: expected an integer >= 1"),
    ("--num-flows 0", [*TRAIN, "--num-flows", "0"], USAGE, r"argument --num-flows: expected an integer >= 1"),
    ("--keep-every -1", [*TRAIN, "--keep-every", "-1"], USAGE, r"argument --keep-every: expected an integer >= 0"),
    ("--warmup-steps -1", [*TRAIN, "--warmup-steps", "-1"], USAGE, r"argument --warmup-steps: expected an integer >= 0"),
    ("--cycle-steps -1", [*TRAIN, "--cycle-steps", "-1"], USAGE, r"argument --cycle-steps: expected an integer >= 0"),
    ("--seed -1", [*TRAIN, "--seed", "-1"], USAGE, r"argument --seed: expected an integer >= 0, got '-1'"),
    ("--lr 0", [*TRAIN, "--lr", "0"], USAGE, r"argument --lr: expected a finite number > 0, got '0'"),
    ("--lr -1", [*TRAIN, "--lr", "-1"], USAGE, r"argument --lr: expected a finite number > 0, got '-1'"),
    ("--lr nan", [*TRAIN, "--lr", "nan"], USAGE, r"argument --lr: expected a finite number > 0, got 'nan'"),
    ("--lr inf", [*TRAIN, "--lr", "inf"], USAGE, r"argument --lr: expected a finite number > 0, got 'inf'"),
    ("--beta nan", [*TRAIN, "--beta", "nan"], USAGE, r"argument --beta: expected a finite number >= 0, got 'nan'"),
    ("--beta -1", [*TRAIN, "--beta", "-1"], USAGE, r"argument --beta: expected a finite number >= 0, got '-1'"),
    ("--free-bits nan", [*TRAIN, "--free-bits", "nan"], USAGE, r"argument --free-bits: expected a finite number >= 0, got 'nan'"),
    ("--free-bits inf", [*TRAIN, "--free-bits", "inf"], USAGE, r"argument --free-bits: expected a finite number >= 0, got 'inf'"),
    ("--gamma -1", [*TRAIN, "--gamma", "-1"], USAGE, r"argument --gamma: expected a finite number >= 0"),
    ("--valid-size abc", [*TRAIN, "--valid-size", "abc"], USAGE, r"argument --valid-size: expected a count \(5000\) or a fraction"),
    ("--valid-size -1", [*TRAIN, "--valid-size", "-1"], USAGE, r"argument --valid-size: expected a count >= 0 or a fraction in \[0, 1\)"),
    ("--valid-size 1.5", [*TRAIN, "--valid-size", "1.5"], USAGE, r"argument --valid-size: expected a count >= 0 or a fraction"),
    ("--valid-size = all training images", [*TRAIN, "--valid-size", "60"], USAGE, r"Expected valid_size as a count in \[0, 60\)"),
    ("--activation foo", [*TRAIN, "--activation", "foo"], USAGE, r"argument --activation: invalid choice: 'foo'"),
    ("--model foo", [*TRAIN, "--model", "foo"], USAGE, r"argument --model: invalid choice: 'foo'"),
    ("--flow foo", [*TRAIN, "--flow", "foo"], USAGE, r"argument --flow: invalid choice: 'foo'"),
    ("--dataset cifar", [*TRAIN, "--dataset", "cifar"], USAGE, r"argument --dataset: invalid choice: 'cifar'"),
    ("--beta with --model ae", [*TRAIN, "--model", "ae", "--beta", "2"], USAGE, r"apply to --model vae only, got --model ae"),
    ("--guide ffg with --model vqvae", [*TRAIN, "--model", "vqvae", "--guide", "ffg"], USAGE, r"--guide ffg applies to --model vae only"),
    # train: data
    ("--data-dir missing", [*TRAIN, "--data-dir", "{missing}"], USAGE, r"argument --data-dir: no directory '.*missing'"),
    ("--data-dir names a file", [*TRAIN, "--data-dir", "{file}"], USAGE, r"argument --data-dir: '.*file.txt' is not a directory"),
    ("--data-dir with the embedded data", ["train", "--out", "{root}/new", "--data-dir", "{ok}"], USAGE,
     r"argument --data-dir: applies to --dataset mnist or fashion-mnist"),
    ("--data-dir without the data", [*TRAIN, "--data-dir", "{empty}"], RUNTIME, r"Dataset 'mnist' not found.*no fallback nor download"),
    ("corrupt gzip in --data-dir", [*TRAIN, "--data-dir", "{corrupt_gz}"], RUNTIME,
     r"Could not read IDX file '.*t10k-images-idx3-ubyte.gz': error: Error -3"),
    ("truncated IDX file", [*TRAIN, "--data-dir", "{truncated}"], RUNTIME, r"'.*train-images-idx3-ubyte' is truncated or corrupt"),
    ("test images of another size", [*TRAIN, "--data-dir", "{mixed}"], RUNTIME,
     r"Expected test images of the training images' size \(28, 28\), got \(32, 32\) in .*t10k-images"),
    ("images not uint8", [*TRAIN, "--data-dir", "{int8}"], RUNTIME, r"train-images-idx3-ubyte.gz: expected uint8 pixels"),
    ("labels do not match images", [*TRAIN, "--data-dir", "{labels}"], RUNTIME, r"equal to the 19 labels"),
    # evaluate
    ("evaluate: missing run", ["evaluate", "{missing}"], USAGE, r"argument run: no run directory '.*missing'"),
    ("evaluate: run names a file", ["evaluate", "{file}"], USAGE, r"argument run: '.*file.txt' is a file, not a run directory"),
    ("evaluate: not a run directory", ["evaluate", "{ok}"], USAGE, r"argument run: '.*ok' holds no checkpoint.pt"),
    ("evaluate: corrupt checkpoint", ["evaluate", "{bad_ckpt}"], RUNTIME, r"Checkpoint .* is truncated or corrupt"),
    ("evaluate: foreign checkpoint", ["evaluate", "{foreign}"], RUNTIME, r"is not a ppl_vae checkpoint"),
    ("evaluate --n 0", ["evaluate", "{run}", "--n", "0"], USAGE, r"argument --num-points/--n: expected an integer >= 1, got '0'"),
    ("evaluate --n -5", ["evaluate", "{run}", "--n", "-5"], USAGE, r"argument --num-points/--n: expected an integer >= 1, got '-5'"),
    ("evaluate --n beyond the split", ["evaluate", "{run}", "--n", "999"], USAGE, r"Expected n in \[1, 20\] \(the test split's size\), got 999"),
    ("evaluate --samples 0", ["evaluate", "{run}", "--samples", "0"], USAGE, r"argument --samples: expected an integer >= 1"),
    ("evaluate --iwae -1", ["evaluate", "{run}", "--iwae", "-1"], USAGE, r"argument --iwae: expected an integer >= 0"),
    ("evaluate --prior-mc -1", ["evaluate", "{run}", "--prior-mc", "-1"], USAGE, r"argument --prior-mc: expected an integer >= 0"),
    ("evaluate --ais-chains 0", ["evaluate", "{run}", "--ais", "--ais-chains", "0"], USAGE, r"argument --ais-chains: expected an integer >= 1"),
    ("evaluate --ais-steps without --ais", ["evaluate", "{run}", "--ais-steps", "5"], USAGE, r"argument --ais-steps: applies only with --ais"),
    ("evaluate --ais-from-guide without --ais", ["evaluate", "{run}", "--ais-from-guide"], USAGE,
     r"argument --ais-from-guide: applies only with --ais"),
    ("evaluate an empty split", ["evaluate", "{run}", "--split", "valid"], USAGE, r"The valid split of .* is empty .*valid_size=0"),
    ("evaluate --split foo", ["evaluate", "{run}", "--split", "foo"], USAGE, r"argument --split: invalid choice: 'foo'"),
    ("evaluate --out names a directory", ["evaluate", "{run}", "--out", "{root}"], USAGE, r"argument --out: .* is a directory, expected a file"),
    ("evaluate --out under a file", ["evaluate", "{run}", "--out", "{file}/e.json"], USAGE, r"lies under '.*file.txt', which is a file"),
    ("evaluate --out names the run's checkpoint", ["evaluate", "{run}", "--out", "{run}/checkpoint.pt"], USAGE,
     r"Expected --out '.*checkpoint.pt' to be a new file, but it is the run's own checkpoint.pt"),
    ("evaluate --out names the run's configuration", ["evaluate", "{run}", "--out", "{run}/config.json"], USAGE,
     r"it is the run's own config.json"),
    ("evaluate a per-datapoint guide on test points", ["evaluate", "{ffg}"], USAGE, r"is per-datapoint .* evaluate split 'train'"),
    ("evaluate: the run's data changed size", ["evaluate", "{swapped}"], RUNTIME,
     r"Expected test images of 784 pixels \(what the run's model was trained on\), got 1024"),
    ("evaluate --device foo", ["evaluate", "{run}", "--device", "foo"], USAGE, r"argument --device: expected cpu"),
    # gap
    ("gap --n 0", ["gap", "{run}", *GAP, "--n", "0"], USAGE, r"argument --num-points/--n: expected an integer >= 1"),
    ("gap --n beyond the split", ["gap", "{run}", *GAP, "--n", "999"], USAGE, r"Expected n in \[1, 20\]"),
    ("gap --eval-samples 1", ["gap", "{run}", *GAP, "--eval-samples", "1"], USAGE, r"argument --eval-samples: expected an integer >= 2"),
    ("gap --max-steps 0", ["gap", "{run}", *GAP, "--max-steps", "0"], USAGE, r"argument --max-steps: expected an integer >= 1"),
    ("gap --lr nan", ["gap", "{run}", *GAP, "--lr", "nan"], USAGE, r"argument --lr: expected a finite number > 0"),
    ("gap --local-samples 0", ["gap", "{run}", *GAP, "--local-samples", "0"], USAGE, r"argument --local-samples: expected an integer >= 1"),
    ("gap --families foo", ["gap", "{run}", *GAP, "--families", "foo"], USAGE, r"argument --families: invalid choice: 'foo'"),
    ("gap --families repeated", ["gap", "{run}", *GAP, "--families", "ffg", "ffg"], USAGE, r"argument --families: expected distinct"),
    ("gap --split repeated", ["gap", "{run}", *GAP, "--split", "test", "test"], USAGE, r"argument --split: expected distinct splits"),
    ("gap --over-training with two splits", ["gap", "{run}", *GAP, "--over-training", "--split", "train", "test"], USAGE,
     r"argument --over-training: measures one split, got --split train test"),
    ("gap --over-training without kept checkpoints", ["gap", "{run}", *GAP, "--over-training"], USAGE, r"kept no checkpoints"),
    ("gap --ais-chains without --ais", ["gap", "{run}", *GAP, "--ais-chains", "2"], USAGE, r"argument --ais-chains: applies only with --ais"),
    ("gap of a model that is not a VAE", ["gap", "{ae}", *GAP], USAGE, r"needs a VAE.*the run's model is 'ae'"),
    ("gap of a per-datapoint guide", ["gap", "{ffg}", *GAP], USAGE, r"The run's guide 'ffg' is not amortized"),
    ("gap --out names a file", ["gap", "{run}", *GAP, "--out", "{file}"], USAGE, r"argument --out: .* is a file, expected a directory"),
    ("gap: the run's data changed size", ["gap", "{swapped}", *GAP], RUNTIME, r"Expected test images of 784 pixels"),
    # posterior
    ("posterior --draws 0", ["posterior", "{run}", "--draws", "0"], USAGE, r"argument --draws: expected an integer >= 1, got '0'"),
    ("posterior --chains 0", ["posterior", "{run}", "--chains", "0"], USAGE, r"argument --chains: expected an integer >= 1"),
    ("posterior --warmup -1", ["posterior", "{run}", "--warmup", "-1"], USAGE, r"argument --warmup: expected an integer >= 0"),
    ("posterior --max-steps 0", ["posterior", "{run}", "--max-steps", "0"], USAGE, r"argument --max-steps: expected an integer >= 1"),
    ("posterior --points -1", ["posterior", "{run}", "--points", "-1"], USAGE, r"argument --points: expected an integer >= 0, got '-1'"),
    ("posterior --points beyond the split", ["posterior", "{run}", "--points", "0", "999"], USAGE,
     r"Expected points in \[0, 20\) \(the test split\), got \[0, 999\]"),
    ("posterior --points repeated", ["posterior", "{run}", "--points", "1", "1"], USAGE, r"argument --points: expected distinct values, got 1 1"),
    ("posterior --guides foo", ["posterior", "{run}", "--guides", "foo"], USAGE, r"argument --guides: invalid choice: 'foo'"),
    ("posterior --guides repeated", ["posterior", "{run}", "--guides", "ffg", "ffg"], USAGE, r"argument --guides: expected distinct"),
    ("posterior amortized of a per-datapoint guide", ["posterior", "{ffg}", "--split", "train", "--guides", "amortized"], USAGE,
     r"The run's guide 'ffg' is not amortized: drop 'amortized'"),
    ("posterior of a model that is not a VAE", ["posterior", "{ae}"], USAGE, r"needs a VAE.*the run's model is 'ae'"),
    ("posterior on an empty split", ["posterior", "{run}", "--split", "valid"], USAGE, r"The valid split of .* is empty"),
    ("posterior --out names a file", ["posterior", "{run}", "--out", "{file}"], USAGE, r"argument --out: .* is a file"),
    # plot
    ("plot --n 0", ["plot", "{run}", "--n", "0"], USAGE, r"argument --n: expected an integer >= 1"),
    ("plot --out names a file", ["plot", "{run}", "--out", "{file}"], USAGE, r"argument --out: .* is a file, expected a directory"),
    ("plot: the run's data changed to 32 x 32", ["plot", "{swapped}"], RUNTIME, r"Expected test images of 784 pixels .* got 1024"),
    ("plot: missing run", ["plot", "{missing}"], USAGE, r"argument run: no run directory"),
]


@pytest.mark.parametrize("argv, status, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_line(world, capsys, argv, status, message):
    argv = [a.format(**world) for a in argv]
    before = tree(world["root"])
    with default_float32():
        assert main(argv) == status
    out, err = capsys.readouterr()
    prog = f"ppl-vae {argv[0]}" if argv and argv[0] in ("train", "evaluate", "gap", "posterior", "plot") else "ppl-vae"
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"{prog}: error: ") and re.search(message, err), err
    assert tree(world["root"]) == before  # nothing written, not even an empty directory


def test_every_case_is_in_the_readme():
    """The README's bad-input table lists every class tested here, with its exit status."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name, _, status, _ in CLI_CASES if f"| {name} | {status} |" not in readme]
    assert missing == []


# -- the Python API: the same classes, as exceptions naming the argument ---------------------------------------

def _api_cases(world):
    from ppl_vae.estimators import elbo, iwae_bound
    from ppl_vae.jobs import evaluate, evaluate_run, gap_over_training, gap_run, log_p_hat, plot_run, posterior_run, write_json
    from ppl_vae.training import Trainer

    run = load_run(world["run"])
    x = run.splits().test.x[:4]
    model, guide = run.model, run.guide
    nan = x.clone()
    nan[1, 3] = math.nan
    base = dict(dataset="mnist", data_dir=world["ok"], z_dim=2, hidden=(8,), epochs=1)

    def foreign_guide(x, idx=None):  # samples a site the model does not have
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", pyro.distributions.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))

    return [
        ("images x 255 (evaluate)", lambda: evaluate(model, guide, x * 255, iwae_samples=10), DataError,
         r"pixels outside \[0, 1\] \(min 0, max 255\)"),
        ("images x 255 (iwae_bound)", lambda: iwae_bound(model, guide, x * 255, num_samples=10), DataError, r"outside \[0, 1\]"),
        ("images x 255 (Trainer.step)", lambda: Trainer(model, guide, pyro.infer.Trace_ELBO()).step(x * 255),
         DataError, r"outside \[0, 1\]"),
        ("guide sites not the model's (Trainer.step)", lambda: Trainer(model, foreign_guide, pyro.infer.Trace_ELBO()).step(x),
         ValueError, r"Guide sites do not match the model's latent sites: model has \['z'\], guide samples \['w'\]"),
        ("guide sites not the model's (elbo)", lambda: elbo(model, foreign_guide, x), ValueError, r"Guide sites do not match"),
        ("a report over the run's history (write_json)", lambda: write_json(f"{world['run']}/history.json", {}), ValueError,
         r"it is the run's own history.json"),
        ("NaN pixels (elbo)", lambda: elbo(model, guide, nan), DataError, r"NaN or infinite (pixels|values) \(first bad rows: \[1\]\)"),
        ("images of another size (evaluate)", lambda: evaluate(model, guide, torch.rand(4, 1024)), DataError,
         r"Expected x with 784 pixels per image, got shape \(4, 1024\)"),
        ("images of another size (elbo)", lambda: elbo(model, guide, torch.rand(4, 1024)), DataError,
         r"Expected x of shape \(N, 784\)"),
        ("num_samples 0", lambda: evaluate(model, guide, x, num_samples=0), ValueError,
         r"Expected num_samples to be an integer >= 1, got 0"),
        ("iwae_samples -1", lambda: evaluate(model, guide, x, iwae_samples=-1), ValueError, r"Expected iwae_samples to be an integer >= 0"),
        ("ais_from_guide without AIS", lambda: evaluate(model, guide, x, ais_from_guide=True), ValueError,
         r"Expected ais_steps >= 1 or bdmc_steps >= 1 with ais_from_guide=True"),
        ("log_p_hat of different points", lambda: log_p_hat([iwae_bound(model, guide, x, num_samples=5),
                                                             iwae_bound(model, guide, x[:2], num_samples=5)]),
         ValueError, r"Expected estimates of the same data points"),
        ("evaluate_run n 0", lambda: evaluate_run(run, n=0), ValueError, r"Expected n in \[1, 20\] \(the test split's size\), got 0"),
        ("evaluate_run n -5", lambda: evaluate_run(run, n=-5), ValueError, r"Expected n in \[1, 20\].*got -5"),
        ("evaluate_run n beyond the split", lambda: evaluate_run(run, n=999), ValueError, r"got 999"),
        ("evaluate_run empty split", lambda: evaluate_run(run, "valid"), ValueError, r"The valid split of .* is empty"),
        ("evaluate_run unknown split", lambda: evaluate_run(run, "foo"), ValueError, r"Expected split in \('train', 'valid', 'test'\)"),
        ("evaluate_run per-datapoint guide", lambda: evaluate_run(world["ffg"]), ValueError, r"is per-datapoint"),
        ("evaluate_run data changed size", lambda: evaluate_run(world["swapped"]), DataError, r"Expected test images of 784 pixels"),
        ("evaluate_run missing run", lambda: evaluate_run(world["missing"]), CheckpointError, r"No checkpoint at"),
        ("gap_run n 0", lambda: gap_run(run, n=0), ValueError, r"Expected n to be an integer >= 1, got 0"),
        ("gap_run eval_samples 1", lambda: gap_run(run, eval_samples=1), ValueError, r"Expected eval_samples to be an integer >= 2"),
        ("gap_run unknown family", lambda: gap_run(run, families=("foo",)), ValueError, r"Expected families among"),
        ("gap_run repeated split", lambda: gap_run(run, ("test", "test")), ValueError, r"Expected distinct splits"),
        ("gap_run lr nan", lambda: gap_run(run, lr=math.nan), ValueError, r"Expected lr to be a finite number > 0, got nan"),
        ("gap_run init foo", lambda: gap_run(run, init="foo"), ValueError, r"Expected init 'guide' or 'prior'"),
        ("gap_run not a VAE", lambda: gap_run(world["ae"]), ValueError, r"needs a VAE"),
        ("gap_over_training without kept checkpoints", lambda: gap_over_training(run), ValueError, r"kept no checkpoints"),
        ("posterior_run draws 0", lambda: posterior_run(run, draws=0), ValueError, r"Expected draws to be an integer >= 1, got 0"),
        ("posterior_run chains 0", lambda: posterior_run(run, chains=0), ValueError, r"Expected chains to be an integer >= 1"),
        ("posterior_run repeated points", lambda: posterior_run(run, (0, 0)), ValueError, r"Expected distinct points, got \[0, 0\]"),
        ("posterior_run point beyond the split", lambda: posterior_run(run, (999,)), ValueError, r"Expected points in \[0, 20\)"),
        ("posterior_run no points", lambda: posterior_run(run, ()), ValueError, r"Expected points in \[0, 20\)"),
        ("posterior_run unknown sampler", lambda: posterior_run(run, guides=("foo",)), ValueError, r"Expected distinct guides among"),
        ("plot_run n 0", lambda: plot_run(run, world["root"] + "/figs", n=0), ValueError, r"Expected n to be an integer >= 1"),
        ("plot_run out names a file", lambda: plot_run(run, world["file"]), ValueError, r"to be a directory, but it is a file"),
        ("TrainConfig hidden -5", lambda: train_run(TrainConfig(**{**base, "hidden": (-5,)}), world["root"] + "/new"),
         ValueError, r"Expected layer sizes that are positive integers, got \[-5\]"),
        ("TrainConfig free_bits nan", lambda: TrainConfig(**base, free_bits=math.nan), ValueError, r"Expected free_bits to be finite, got nan"),
        ("TrainConfig lr inf", lambda: TrainConfig(**base, lr=math.inf), ValueError, r"Expected lr to be finite, got inf"),
        ("TrainConfig seed -1", lambda: TrainConfig(**base, seed=-1), ValueError, r"Expected seed in \[0, 2\*\*32\)"),
        ("valid_size a string", lambda: load_splits(valid_size="0.1"), ValueError, r"Expected valid_size to be a count \(int\) or a fraction"),
        ("data_dir missing", lambda: load_splits("mnist", world["missing"]), FileNotFoundError,
         r"Expected data_dir to be an existing directory, got '.*missing'"),
        ("data_dir with the embedded data", lambda: load_splits(data_dir=world["ok"]), ValueError,
         r"Expected no data_dir with the embedded dataset"),
        ("corrupt gzip", lambda: load_raw("mnist", world["corrupt_gz"]), DataError, r"Could not read IDX file"),
        ("test images of another size", lambda: load_raw("mnist", world["mixed"]), DataError, r"Expected test images of the training"),
    ]


def test_python_api(world):
    before = tree(world["root"])
    with default_float32():
        cases = _api_cases(world)
        failures = []
        for name, call, error, message in cases:
            try:
                call()
            except error as e:
                if not re.search(message, str(e).splitlines()[0]):
                    failures.append(f"{name}: message {str(e).splitlines()[0]!r} does not match {message!r}")
            except Exception as e:  # noqa: BLE001 - any other outcome is the failure being tested for
                failures.append(f"{name}: {type(e).__name__}: {e}")
            else:
                failures.append(f"{name}: no error")
    assert failures == []
    assert len(cases) >= 40
    assert tree(world["root"]) == before


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_paths_that_score_without_validation_refuse_non_finite_data(bad):
    """AIS, prior Monte Carlo and NUTS switch Pyro's validation off inside their potentials: they check x first
    (a NaN used to come back as AIS's log p̂, an inf as prior MC's -inf)."""
    from ppl_vae.estimators import ais, prior_mc
    from ppl_vae.posterior import nuts_draws

    def model(x, idx=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0).expand([x.shape[0]]), obs=x[:, 0])

    x = torch.zeros(3, 1)
    x[1, 0] = bad
    for call in (lambda: ais(model, x, num_steps=2, num_chains=2), lambda: prior_mc(model, x, num_samples=4),
                 lambda: nuts_draws(model, x, num_chains=1, num_draws=2, warmup=2)):
        with pytest.raises(DataError, match=r"x contains NaN or infinite values \(first bad rows: \[1\]\)"):
            call()
