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
from ppl_vae.objectives import IWAE_ELBO, FreeBitsELBO

from .zoo import build_zoo_guide, build_zoo_model, build_zoo_objective

__all__ = ["TrainConfig", "build_model", "build_guide", "build_objective", "describe_objective", "MODELS", "GUIDES",
           "OBJECTIVES", "RESUMABLE"]

MODELS = ("vae", "ae", "vqvae", "vaegan", "aae")
GUIDES = ("amortized", "flow", "ffg")
AMORTIZED_GUIDES = ("amortized", "flow")
OBJECTIVES = ("trace", "meanfield", "iwae")
RESUMABLE = ("epochs", "device", "data_dir")
"""Fields a resumed run may change: how long it trains, where it runs, where its data files are found."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` and in every checkpoint).

    :raises ValueError: naming the option, for a value out of range or options that cannot be honoured together
        (:meth:`combination_problem`).
    """

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
        for name in ("beta", "free_bits", "gamma"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"Expected {name} to be finite, got {value}")
            if value < 0:
                raise ValueError(f"Expected {name} >= 0, got {value}")
        if min(self.warmup_steps, self.cycle_steps) < 0:
            raise ValueError(f"Expected warmup_steps and cycle_steps >= 0, got {self.warmup_steps} and {self.cycle_steps}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"Expected seed in [0, 2**32), got {self.seed}")
        if self.keep_every < 0:
            raise ValueError(f"Expected keep_every >= 0, got {self.keep_every}")
        if self.epochs < 0:
            raise ValueError(f"Expected epochs >= 0, got {self.epochs}")
        if not math.isfinite(self.lr):
            raise ValueError(f"Expected lr to be finite, got {self.lr}")
        if self.lr <= 0:
            raise ValueError(f"Expected lr > 0, got {self.lr}")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        problem = self.combination_problem()
        if problem:
            raise ValueError(problem)

    def combination_problem(self) -> str | None:
        """Why these options cannot be honoured together (naming them as command-line flags), or ``None``.

        Every option either changes what is trained or is refused: none is silently ignored.
        """
        d = TrainConfig.__dataclass_fields__
        if self.model != "vae" and self.guide != "amortized":
            return f"--guide {self.guide} applies to --model vae only, got --model {self.model}"
        if self.model != "vae" and (self.beta != 1.0 or self.warmup_steps or self.cycle_steps or self.free_bits):
            return f"beta, warm-up and free bits apply to --model vae only, got --model {self.model}"
        if self.model != "vae" and self.elbo != "trace":
            return (f"--elbo {self.elbo} applies to --model vae only: --model {self.model} trains its own objective "
                    "(Pyro's Trace_ELBO of its pair, or its adversarial and codebook losses)")
        if self.model in ("vqvae", "vaegan", "aae") and self.k != 1:
            return f"--k {self.k} applies to --model vae and ae only, got --model {self.model}"
        if self.model != "vaegan" and self.gamma != 1.0:
            return f"--gamma {self.gamma} applies to --model vaegan only, got --model {self.model}"
        if self.model == "vqvae" and self.z_dim != d["z_dim"].default:
            return (f"--z-dim {self.z_dim} does not apply to --model vqvae: its code is 8 latent vectors of 16 "
                    "dimensions from a codebook of 64")
        if self.guide != "flow" and (self.flow != d["flow"].default or self.num_flows != d["num_flows"].default):
            return f"--flow and --num-flows apply to --guide flow only, got --guide {self.guide}"
        if self.warmup_steps and self.cycle_steps:
            return (f"--warmup-steps {self.warmup_steps} and --cycle-steps {self.cycle_steps} are two KL schedules: "
                    "choose one")
        if self.elbo == "iwae" and (self.beta != 1.0 or self.warmup_steps or self.cycle_steps):
            return ("--elbo iwae cannot be combined with --beta, --warmup-steps or --cycle-steps: the importance weights "
                    "of the IWAE bound do not separate a KL term to weight (use --elbo trace or meanfield)")
        if self.free_bits and self.elbo == "iwae":
            return ("--free-bits cannot be combined with --elbo iwae: free bits floor the KL term of the ELBO, which "
                    "the IWAE bound does not have (use --elbo meanfield)")
        if self.free_bits and self.elbo != "meanfield":
            return (f"--free-bits floors the analytic KL of every latent dimension (as --elbo meanfield computes it), "
                    f"got --elbo {self.elbo}: pass --elbo meanfield")
        return None

    def data_parallel_problem(self, world_size: int, num_points: int) -> str | None:
        """Why this configuration cannot be trained data-parallel on ``world_size`` processes with ``num_points`` training
        points (naming the option), or ``None``.

        :param int world_size: the number of processes ``P``.
        :param int num_points: the training points ``N``.
        :returns: the reason, or ``None``.
        """
        if self.model not in ("vae", "ae"):
            return (f"--model {self.model} under torchrun: data-parallel training supports --model vae and ae; the "
                    f"adversarial and VQ-VAE trainers have their own optimizers and losses (train it on one process)")
        if self.free_bits:
            return (f"--free-bits {self.free_bits} under torchrun: free bits floor the KL per dimension averaged over "
                    "the whole batch, which no process sees alone (train it on one process)")
        if self.batch_size < world_size:
            return (f"--batch-size {self.batch_size} under torchrun with {world_size} processes: every process needs a "
                    "point of every batch (the batch size is the global batch, split over the processes)")
        last = num_points % self.batch_size
        if 0 < last < world_size:
            return (f"--batch-size {self.batch_size} leaves a last batch of {last} point(s) in every epoch of the "
                    f"{num_points} training points, fewer than the {world_size} processes: choose a batch size that "
                    f"divides {num_points} or leaves at least {world_size}")
        return None

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
    """The Pyro ELBO object used as training loss (``differentiable_loss(model, guide, x, idx)``) of a VAE run (the
    other models of the zoo use Pyro's ``Trace_ELBO`` or their own trainers)."""
    if config.free_bits > 0:
        base = FreeBitsELBO(config.free_bits, num_particles=config.k)
    elif config.elbo == "trace":
        base = pyro.infer.Trace_ELBO(num_particles=config.k, vectorize_particles=config.k > 1)
    elif config.elbo == "meanfield":
        base = pyro.infer.TraceMeanField_ELBO(num_particles=config.k, vectorize_particles=config.k > 1)
    else:
        base = IWAE_ELBO(num_particles=config.k)
    return build_zoo_objective(config, base) if config.model == "vae" else base


def describe_objective(config: TrainConfig) -> str:
    """What the run trains, in words (``history["objective"]``): e.g. ``"ELBO (TraceMeanField_ELBO, K=1)"``,
    ``"IWAE bound (K=5)"``, ``"ELBO with the KL weighted by beta: linear warm-up to 4.0 over 100 steps"``."""
    if config.model in ("vaegan", "aae"):
        return f"{config.model}: minus the pixel reconstruction cross-entropy (plus its adversarial losses)"
    if config.model == "vqvae":
        return "vqvae: log-likelihood minus the codebook and commitment losses"
    if config.elbo == "iwae":
        return f"IWAE bound (K={config.k})"
    name = {"trace": "Trace_ELBO", "meanfield": "TraceMeanField_ELBO"}[config.elbo]
    base = (f"free-bits ELBO (lambda {config.free_bits} nats per dimension, K={config.k})" if config.free_bits
            else f"ELBO ({name}, K={config.k})")
    if config.warmup_steps:
        return f"{base} with the KL weighted by beta: linear warm-up to {config.beta} over {config.warmup_steps} steps"
    if config.cycle_steps:
        return f"{base} with the KL weighted by beta: cyclical, period {config.cycle_steps} steps, up to {config.beta}"
    if config.beta != 1.0:
        return f"{base} with the KL weighted by beta = {config.beta}"
    return base
