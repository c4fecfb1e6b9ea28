"""Generative models as Pyro model functions ``model(x, idx=None)`` (see the README's conventions)."""
from .gmm import GaussianMixture, empty_guide, fit_gmm
from .linear_gaussian import LinearGaussian
from .vae import BernoulliVAE

__all__ = ["BernoulliVAE", "GaussianMixture", "LinearGaussian", "empty_guide", "fit_gmm"]
