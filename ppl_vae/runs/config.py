"""A run's configuration and how models and guides are built from it."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import pyro.infer
import torch

from ppl_vae.guides import AmortizedFlow, AmortizedNormal, PerDatapointNormal
from ppl_vae.latent_space import LatentSpace
from ppl_vae.objectives import IWAE_ELBO

from .zoo import build_zoo_guide, build_zoo_model, build_zoo_objective

__all__ = ["TrainConfig", "build_model", "build_guide", "MODELS", "GUIDES", "OBJECTIVES"]

MODELS = ("vae", "ae", "vqvae", "vaegan", "aae")
GUIDES = ("amortized", "flow", "ffg")
AMORTIZED_GUIDES = ("amortized", "flow")
OBJECTIVES = ("trace", "meanfield", "iwae")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` and in every checkpoint)."""

    dataset: str = "fashion-mnist-small"
    data_dir: str | None = None
    binarize: str = "dynamic"
    valid_size: float | int = 0.1
    model: str = "vae"
    guide: str = "amortized"
    z_dim: int = 50
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "elu"
    elbo: str = "trace"
    k: int = 1
    lr: float = 1e-3
    batch_size: int = 100
    epochs: int = 10
    seed: int = 0
    device: str = "cpu"
    eval_samples: int = 1
    flow: str = "iaf"
    num_flows: int = 2
    keep_every: int = 0
    beta: float = 1.0
    warmup_steps: int = 0
    cycle_steps: int = 0
    free_bits: float = 0.0
    gamma: float = 1.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"Unknown model {self.model!r}; expected one of {MODELS}")
        if self.guide not in GUIDES:
            raise ValueError(f"Unknown guide {self.guide!r}; expected one of {GUIDES}")
        if self.elbo not in OBJECTIVES:
            raise ValueError(f"Unknown elbo {self.elbo!r}; expected one of {OBJECTIVES}")
        for name in ("z_dim", "k", "batch_size", "eval_samples", "num_flows"):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected {name} >= 1, got {getattr(self, name)}")
        if self.model != "vae" and self.guide != "amortized":
            raise ValueError(f"--guide {self.guide} applies to --model vae only, got --model {self.model}")
        if self.model != "vae" and (self.beta != 1.0 or self.warmup_steps or self.cycle_steps or self.free_bits):
            raise ValueError(f"beta, warm-up and free bits apply to --model vae only, got --model {self.model}")
        if min(self.beta, self.warmup_steps, self.cycle_steps, self.free_bits, self.gamma) < 0:
            raise ValueError("Expected beta, warmup_steps, cycle_steps, free_bits and gamma >= 0")
        for name in ("lr", "beta", "free_bits", "gamma"):  # NaN passes every comparison above; JSON has no NaN
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"Expected {name} to be finite, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"Expected seed in [0, 2**32), got {self.seed}")
        if self.keep_every < 0:
            raise ValueError(f"Expected keep_every >= 0, got {self.keep_every}")
        if self.epochs < 0 or not self.lr > 0:
            raise ValueError(f"Expected epochs >= 0 and lr > 0, got epochs={self.epochs}, lr={self.lr}")
        object.__setattr__(self, "hidden", tuple(self.hidden))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The configuration saved as ``d`` (``config.json``, a checkpoint's ``config``).

        :raises ValueError: for keys that are not fields of :class:`TrainConfig`.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown configuration keys {unknown}")
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def build_model(config: TrainConfig, x_dim: int) -> torch.nn.Module:
    return build_zoo_model(config, x_dim)


def build_guide(config: TrainConfig, model, x_example: torch.Tensor, num_points: int | None = None) -> torch.nn.Module:
    """``"amortized"``: the FFG encoder; ``"flow"``: the encoder followed by ``num_flows`` conditional ``flow``
    transforms; ``"ffg"``: free per-datapoint Gaussians for the ``num_points`` training points (non-amortized).

    :raises ValueError: if the per-datapoint guide is asked for without ``num_points``.
    """
    if config.model != "vae":
        return build_zoo_guide(config, model, x_example)
    hidden = tuple(reversed(config.hidden))
    if config.guide == "amortized":
        return AmortizedNormal.for_model(model, x_example, hidden=hidden, activation=config.activation)
    if config.guide == "flow":
        return AmortizedFlow.for_model(model, x_example, hidden=hidden, activation=config.activation,
                                       num_flows=config.num_flows, flow=config.flow)
    if num_points is None:
        raise ValueError("The per-datapoint guide 'ffg' needs the number of training points")
    return PerDatapointNormal(LatentSpace(model, x_example), num_points)


def build_objective(config: TrainConfig):
    """The Pyro ELBO object used as training loss (``differentiable_loss(model, guide, x, idx)``)."""
    if config.elbo == "trace":
        base = pyro.infer.Trace_ELBO(num_particles=config.k, vectorize_particles=config.k > 1)
    elif config.elbo == "meanfield":
        base = pyro.infer.TraceMeanField_ELBO(num_particles=config.k, vectorize_particles=config.k > 1)
    else:
        base = IWAE_ELBO(num_particles=config.k)
    return build_zoo_objective(config, base) if config.model == "vae" else base
