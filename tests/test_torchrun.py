"""``torchrun`` command lines: every one the README documents parses as written (torchrun's parser, then ours), and
a 2-process gap study (``gloo``) writes the report of the 1-process one."""
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from ppl_vae.cli import build_parser, main
from tests.fixtures_runs import default_float32, fake_idx_dataset, train_tiny

README = Path(__file__).resolve().parents[1] / "README.md"


def _documented() -> list[str]:
    lines = re.findall(r"^(torchrun .*)$", README.read_text(encoding="utf-8"), flags=re.M)
    assert lines, "the README documents torchrun command lines"
    return lines


@pytest.mark.parametrize("line", _documented())
def test_every_documented_torchrun_line_parses_as_written(line, tmp_path):
    (tmp_path / "checkpoint.pt").touch()  # what our parser checks of a run directory
    argv = shlex.split(line)[1:]
    args = get_args_parser().parse_args(argv)  # torchrun's own parser: exits on an ambiguous option
    assert args.module and args.training_script == "ppl_vae.cli"
    ours = build_parser()
    parsed, unknown = ours.parse_known_args([a if a != "runs/vae" else str(tmp_path) for a in args.training_script_args])
    assert not unknown, unknown


def test_the_short_spelling_is_what_torchrun_refuses():
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--nproc_per_node=2", "-m", "ppl_vae.cli", "gap", "RUN", "--n", "10"])


@pytest.mark.slow
def test_a_two_process_gap_study_writes_the_one_process_report(tmp_path):
    run = train_tiny(tmp_path / "run", fake_idx_dataset(tmp_path / "data"))
    options = ["--num-points", "4", "--families", "ffg", "--eval-samples", "10", "--max-steps", "5",
               "--local-samples", "2", "--quiet"]
    with default_float32():
        assert main(["gap", run, *options, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                           "ppl_vae.cli", "gap", run, *options, "--out", str(tmp_path / "two")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert (one / "gap_test.md").read_text() == (two / "gap_test.md").read_text()
    a, b = json.loads((one / "gap_test.json").read_text()), json.loads((two / "gap_test.json").read_text())
    _same(a, b)


def _same(a, b, path="report"):
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):  # float32 rounding of q* starts (see test_shards.py's assert_same_report)
        assert math.isclose(a, b, rel_tol=2e-6, abs_tol=1.25e-4), (path, a, b)
    else:
        assert a == b, (path, a, b)
