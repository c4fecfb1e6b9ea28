"""The README's code blocks that are meant to run as shipped (the non-VAE pair through every tool)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
def test_non_vae_pair_runs_through_every_tool(float32):
    block = next(b for b in _blocks() if "class LocationScale" in b)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    gap = namespace["gap"]
    rows = dict((r[0], r[1]) for r in gap.rows())
    assert rows["Inference gap"] > 0 and "L[q*_Full-cov]" in rows
    assert set(namespace["idata"].posterior.data_vars) == {"m_amortized", "s_amortized", "m_nuts", "s_nuts"}
    assert (namespace["idata"].posterior["s_nuts"] > 0).all()
