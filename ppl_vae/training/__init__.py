"""Training: SVI with Pyro's ELBOs (:class:`Trainer`), and the training loops of the zoo's non-SVI models
(VAE-GAN, AAE, VQ-VAE) and of the Gaussian mixture."""
from .aae import AAEOptimizers, aae_step, train_aae
from .adversarial import AdversarialTrainer
from .distributed import DataParallelTrainer
from .gmm import fit_gmm
from .guards import TrainingDiverged, guarded_update
from .trainer import Trainer
from .vaegan import VAEGANOptimizers, train_vaegan, vaegan_step
from .vqvae import VQVAETrainer, train_vqvae, vqvae_optimizer

__all__ = ["AAEOptimizers", "AdversarialTrainer", "DataParallelTrainer", "Trainer", "TrainingDiverged", "VAEGANOptimizers", "VQVAETrainer",
           "aae_step", "fit_gmm", "guarded_update", "train_aae", "train_vaegan", "train_vqvae", "vaegan_step",
           "vqvae_optimizer"]
