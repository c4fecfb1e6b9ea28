"""Generative models as Pyro model functions ``model(x, idx=None)`` (see the README's conventions)."""
from .linear_gaussian import LinearGaussian
from .vae import BernoulliVAE

__all__ = ["BernoulliVAE", "LinearGaussian"]
