"""The inference gap (Cremer, Li & Duvenaud 2018): per-datapoint guides q* fitted with the model frozen, and the
decomposition of log p(x) − L[q] into approximation and amortization gaps."""
from .decomposition import FAMILY_NAMES, InferenceGap, encoder_family, inference_gap, markdown_table
from .local_fit import LocalFit, fit_local_guide, frozen, latent_moments

__all__ = ["FAMILY_NAMES", "InferenceGap", "LocalFit", "encoder_family", "fit_local_guide", "frozen", "latent_moments",
           "inference_gap", "markdown_table"]
