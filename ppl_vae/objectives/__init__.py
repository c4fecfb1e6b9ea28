"""Training objectives beyond Pyro's own ELBOs: the per-point IWAE bound, β/KL-annealed ELBOs, free bits."""
from .annealing import AnnealedELBO, LatentScale, constant, cyclical, linear_warmup, scale_latents
from .free_bits import FreeBitsELBO
from .iwae import IWAE_ELBO

__all__ = ["AnnealedELBO", "FreeBitsELBO", "IWAE_ELBO", "LatentScale", "constant", "cyclical", "linear_warmup",
           "scale_latents"]
