"""Release hygiene: one version source, a licence, a changelog, the declared ArviZ range is the one installed and
tested, and CI lints, tests and builds the docs."""
import configparser
import importlib.metadata
import re

from packaging.requirements import Requirement

import ppl_vae
from tests.test_manners import ROOT


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def test_one_version_source():
    cfg = _setup_cfg()
    assert cfg["metadata"]["version"].strip() == "attr: ppl_vae.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", ppl_vae.__version__)
    assert importlib.metadata.version("ppl_vae") == ppl_vae.__version__
    assert f"## {ppl_vae.__version__}" in (ROOT / "CHANGELOG.md").read_text()
    # no second copy of the number in the packaging files
    for name in ("setup.cfg", "pyproject.toml"):
        assert ppl_vae.__version__ not in (ROOT / name).read_text(), name


def test_licence_is_shipped_and_declared():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in licence
    cfg = _setup_cfg()
    assert cfg["metadata"]["license"] == "MIT" and cfg["metadata"]["license_files"].strip() == "LICENSE"


def test_the_installed_arviz_is_in_the_declared_range():
    requirements = [Requirement(r) for r in _setup_cfg()["options"]["install_requires"].split("\n")
                    if r.strip() and not r.strip().startswith("#")]
    arviz = next(r for r in requirements if r.name == "arviz")
    assert str(arviz.specifier) in ("<1,>=0.22", ">=0.22,<1")
    assert arviz.specifier.contains(importlib.metadata.version("arviz"))
    assert not arviz.specifier.contains("1.0.0")  # ArviZ 1.x changed az.from_dict


def test_ci_lints_tests_and_builds_the_docs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("make lint") < ci.index("make test") < ci.index("make docs")
    makefile = (ROOT / "Makefile").read_text()
    assert "ruff check ." in makefile and "sphinx -E -W" in makefile
    extras = _setup_cfg()["options.extras_require"]
    assert "ruff" in extras["test"] and "sphinx" in extras["docs"]
