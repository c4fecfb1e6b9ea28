import os

import pyro
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on two cores: one thread each (and in the processes they start), as
    # two torch processes with two threads each slow each other down badly
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _pyro_defaults():
    """float64, Pyro validation on, a clean param store and a fixed seed for every test (as Pyro's own suite)."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.enable_validation(True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture
def float32():
    """Tests of the training pipeline run in float32, like the CLI."""
    torch.set_default_dtype(torch.float32)
    yield


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP contention on a shared machine (10x faster steps). Modules of small
    trainings use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
