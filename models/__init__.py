"""Generative models as Pyro model functions ``model(x, idx=None)`` (see the README's conventions)."""
from .aae import AdversarialAutoencoder
from .autoencoder import Autoencoder, DeltaEncoder
from .gmm import GaussianMixture, empty_guide
from .linear_gaussian import LinearGaussian
from .vae import BernoulliVAE
from .vaegan import VAEGAN, Discriminator
from .vqvae import VQVAE

__all__ = ["AdversarialAutoencoder", "Autoencoder", "BernoulliVAE", "DeltaEncoder", "Discriminator",
           "GaussianMixture", "LinearGaussian", "VAEGAN", "VQVAE", "empty_guide"]
