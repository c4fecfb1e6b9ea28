"""Every example runs top to bottom with a tiny budget (smoke test)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "gaussian_mixture.py": ["--num-points", "200", "--steps", "20"],
    "latent_spaces.py": ["--sizes", "2", "5", "--epochs", "1"],
    "objective_ablation.py": ["--epochs", "1"],
    "posterior_collapse.py": ["--epochs", "1", "--z-dim", "8"],
    "vqvae.py": ["--epochs", "1", "--classifier-epochs", "1", "--num-samples", "200"],
    "vaegan_aae.py": ["--epochs", "1", "--num-samples", "100", "--num-eval", "20", "--classifier-epochs", "1"],
    "inference_gap.py": ["--dataset", "fashion-mnist-small", "--valid-size", "500", "--epochs", "1", "--n", "8",
                         "--eval-samples", "50", "--max-steps", "30", "--quiet"],
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name, tmp_path):
    cmd = [sys.executable, str(ROOT / "examples" / name), "--out", str(tmp_path), *EXAMPLES[name]]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(tmp_path.rglob("*.png")), "the example saved no figure"
