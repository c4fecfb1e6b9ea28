"""Guides: ``guide(x, idx=None)`` sampling the model's latent sites inside ``pyro.plate("data")``."""
from .amortized_normal import AmortizedNormal
from .per_datapoint_normal import PerDatapointNormal

__all__ = ["AmortizedNormal", "PerDatapointNormal"]
