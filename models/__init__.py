"""Generative models as Pyro model functions ``model(x, idx=None)`` (see the README's conventions)."""
from .aae import AdversarialAutoencoder, train_aae
from .autoencoder import Autoencoder, DeltaEncoder
from .gmm import GaussianMixture, empty_guide, fit_gmm
from .linear_gaussian import LinearGaussian
from .vae import BernoulliVAE
from .vaegan import VAEGAN, train_vaegan
from .vqvae import VQVAE, train_vqvae

__all__ = ["AdversarialAutoencoder", "Autoencoder", "BernoulliVAE", "DeltaEncoder", "GaussianMixture",
           "LinearGaussian", "VAEGAN", "VQVAE", "empty_guide", "fit_gmm", "train_aae", "train_vaegan", "train_vqvae"]
