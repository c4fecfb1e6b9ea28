"""Guides: ``guide(x, idx=None)`` sampling the model's latent sites inside ``pyro.plate("data")``.

Amortized (an encoder maps ``x`` to the distribution): :class:`AmortizedNormal`, :class:`AmortizedFlow`.
Per-datapoint (free parameters for every data point, looked up by the points' own ``idx``):
:class:`PerDatapointNormal` (FFG), :class:`PerDatapointMVN` (full covariance across all sites),
:class:`PerDatapointFlow` (per-point affine-coupling flows started at the Gaussian; spline, planar or radial as
options). All are distributions over the model's unconstrained latent space
(:class:`ppl_vae.latent_space.LatentSpace`), so they fit any pair that follows the conventions.
"""
from .amortized_flow import FLOWS, AmortizedFlow
from .amortized_normal import AmortizedNormal
from .latent_guide import LatentSpaceGuide, PointIndex
from .per_datapoint_flow import INVERTIBLE_LOCAL_FLOWS, LOCAL_FLOWS, PerDatapointFlow, default_local_flow
from .per_datapoint_mvn import PerDatapointMVN
from .per_datapoint_normal import PerDatapointNormal

LOCAL_GUIDES = {"ffg": PerDatapointNormal, "mvn": PerDatapointMVN, "flow": PerDatapointFlow}

__all__ = ["FLOWS", "INVERTIBLE_LOCAL_FLOWS", "LOCAL_FLOWS", "LOCAL_GUIDES", "AmortizedFlow", "AmortizedNormal",
           "LatentSpaceGuide", "PerDatapointFlow", "PerDatapointMVN", "PerDatapointNormal", "PointIndex", "default_local_flow"]
