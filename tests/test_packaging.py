"""The installed package: one top-level name, ``ppl_vae``; ``models/`` and ``guides/`` install as ``ppl_vae.models``
and ``ppl_vae.guides``, so a user's own ``models`` package neither breaks ppl_vae nor is shadowed by it."""
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("ppl_vae-*.whl")
    return path


def test_wheel_has_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"ppl_vae", wheel.name.split("-py3")[0] + ".dist-info"}
    for required in ("ppl_vae/models/vae.py", "ppl_vae/guides/amortized_normal.py", "ppl_vae/py.typed",
                     "ppl_vae/jobs/evaluate.py", "ppl_vae/data/embedded/fashion-mnist-small/train-images-idx3-ubyte.gz"):
        assert required in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)


@pytest.mark.slow
def test_installed_wheel_runs_beside_a_users_models_package(wheel, tmp_path):
    """A clean virtual environment (the dependencies come from this one through a ``.pth`` file, ppl_vae only from
    the wheel); the commands run from a project directory that has its own ``models/`` and ``guides/``."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--force-reinstall", str(wheel)], check=True, capture_output=True)
    project = tmp_path / "project"
    for name in ("models", "guides"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"WHO = 'the user\\'s {name}'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cli = env_dir / "bin" / "ppl-vae"

    def run(*cmd):
        return subprocess.run([str(c) for c in cmd], cwd=project, env=env, capture_output=True, text=True, timeout=600)

    out = run(python, "-c", "import models, ppl_vae, ppl_vae.models, ppl_vae.guides; "
                            "print(models.WHO, ppl_vae.__file__, ppl_vae.models.BernoulliVAE.__module__)")
    assert out.returncode == 0, out.stderr
    location, module = out.stdout.split()[-2:]
    assert out.stdout.startswith("the user's models ") and module == "ppl_vae.models.vae"
    assert str(env_dir) in location and str(ROOT) not in location  # the wheel's copy, not this checkout
    train = run(cli, "train", "--out", "run", "--epochs", "1", "--z-dim", "2", "--hidden", "16", "--quiet")
    assert train.returncode == 0, train.stderr
    evaluate = run(cli, "evaluate", "run", "--n", "20", "--quiet")
    assert evaluate.returncode == 0, evaluate.stderr
    assert (project / "run" / "evaluation_test.json").is_file()
