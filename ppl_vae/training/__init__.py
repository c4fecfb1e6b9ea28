"""Training: SVI with Pyro's ELBOs (:class:`Trainer`), and the training loops of the zoo's non-SVI models
(VAE-GAN, AAE, VQ-VAE) and of the Gaussian mixture."""
from .aae import AAEOptimizers, aae_step, train_aae
from .adversarial import AdversarialTrainer
from .gmm import fit_gmm
from .trainer import Trainer, TrainingDiverged
from .vaegan import VAEGANOptimizers, train_vaegan, vaegan_step
from .vqvae import train_vqvae

__all__ = ["AAEOptimizers", "AdversarialTrainer", "Trainer", "TrainingDiverged", "VAEGANOptimizers", "aae_step",
           "fit_gmm", "train_aae", "train_vaegan", "train_vqvae", "vaegan_step"]
