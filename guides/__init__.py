"""Guides: ``guide(x, idx=None)`` sampling the model's latent sites inside ``pyro.plate("data")``.

Amortized (an encoder maps ``x`` to the distribution): :class:`AmortizedNormal`, :class:`AmortizedFlow`.
Per-datapoint (free parameters for every data point, indexed by ``idx``): :class:`PerDatapointNormal` (FFG),
:class:`PerDatapointMVN` (full covariance), :class:`PerDatapointFlow` (planar/radial flows).
"""
from .amortized_flow import FLOWS, AmortizedFlow
from .amortized_normal import AmortizedNormal
from .per_datapoint_flow import LOCAL_FLOWS, PerDatapointFlow
from .per_datapoint_mvn import PerDatapointMVN
from .per_datapoint_normal import PerDatapointNormal

LOCAL_GUIDES = {"ffg": PerDatapointNormal, "mvn": PerDatapointMVN, "flow": PerDatapointFlow}

__all__ = ["FLOWS", "LOCAL_FLOWS", "LOCAL_GUIDES", "AmortizedFlow", "AmortizedNormal", "PerDatapointFlow",
           "PerDatapointMVN", "PerDatapointNormal"]
