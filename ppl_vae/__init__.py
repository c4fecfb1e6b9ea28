"""ppl_vae: variational autoencoders in Pyro, and tools to measure why their bound is loose.

Layout: ``ppl_vae.models`` (Pyro models), ``ppl_vae.guides`` (guides), and the engine grouped by role. Imports
point one way: core (:mod:`~ppl_vae.conventions`, :mod:`~ppl_vae.traces`, :mod:`~ppl_vae.latent_space`,
:mod:`~ppl_vae.data`, :mod:`~ppl_vae.estimators`, :mod:`~ppl_vae.objectives`, :mod:`~ppl_vae.nn`) <- models, guides
<- :mod:`~ppl_vae.gap`, :mod:`~ppl_vae.posterior`, :mod:`~ppl_vae.training`, :mod:`~ppl_vae.diagnostics`,
:mod:`~ppl_vae.figures` <- :mod:`~ppl_vae.runs` <- :mod:`~ppl_vae.jobs` <- :mod:`~ppl_vae.cli`. See
:mod:`ppl_vae.conventions` for what a model/guide pair must follow.

The main entry points are available from the top, loaded on first use (PEP 562), so that ``import ppl_vae`` and
``ppl-vae --help`` do not import torch and pyro::

    >>> import ppl_vae
    >>> ppl_vae.train_run.__module__, ppl_vae.evaluate_run.__module__
    ('ppl_vae.runs.run', 'ppl_vae.jobs.evaluate')
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # runs: train and load
    "Run": "ppl_vae.runs", "TrainConfig": "ppl_vae.runs", "load_run": "ppl_vae.runs", "train_run": "ppl_vae.runs",
    # the jobs of the command line
    "Evaluation": "ppl_vae.jobs", "PosteriorReport": "ppl_vae.jobs", "evaluate": "ppl_vae.jobs",
    "evaluate_run": "ppl_vae.jobs", "gap_over_training": "ppl_vae.jobs", "gap_run": "ppl_vae.jobs",
    "log_p_hat": "ppl_vae.jobs", "plot_run": "ppl_vae.jobs", "posterior_run": "ppl_vae.jobs",
    "save_gap_over_training": "ppl_vae.jobs", "save_gap_report": "ppl_vae.jobs",
    # the inference gap
    "GapReport": "ppl_vae.gap", "InferenceGap": "ppl_vae.gap", "fit_local_guide": "ppl_vae.gap",
    "inference_gap": "ppl_vae.gap",
    # estimators of log p(x)
    "Estimate": "ppl_vae.estimators", "ais": "ppl_vae.estimators", "elbo": "ppl_vae.estimators",
    "iwae_bound": "ppl_vae.estimators", "pareto_khat": "ppl_vae.estimators", "prior_mc": "ppl_vae.estimators",
    # data, conventions, training
    "DataError": "ppl_vae.data", "load_splits": "ppl_vae.data", "make_loader": "ppl_vae.data",
    "check_pair": "ppl_vae.conventions", "latent_sites": "ppl_vae.conventions", "Trainer": "ppl_vae.training",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ppl_vae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
