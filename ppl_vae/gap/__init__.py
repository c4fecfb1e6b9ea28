"""The inference gap (Cremer, Li & Duvenaud 2018): per-datapoint guides q* fitted with the model frozen, and the
decomposition of log p(x) − L[q] into approximation and amortization gaps."""
from .decomposition import FAMILY_NAMES, InferenceGap, encoder_family, inference_gap
from .local_fit import LocalFit, fit_local_guide, frozen, latent_moments
from .report import GapOverTraining, GapReport, markdown_table

__all__ = ["FAMILY_NAMES", "GapOverTraining", "GapReport", "InferenceGap", "LocalFit", "encoder_family", "fit_local_guide",
           "frozen", "latent_moments", "inference_gap", "markdown_table"]
