"""The result of an estimator: one value per data point, with its mean and standard error."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["Estimate"]


@dataclass
class Estimate:
    """``per_point``: ``(N,)`` nats per data point; ``name`` says which estimator (e.g. ``"iwae_5000"``);
    ``info`` holds settings (number of samples, ...)."""

    name: str
    per_point: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return self.per_point.mean().item()

    @property
    def stderr(self) -> float:
        """Standard error of the mean over data points (``std / sqrt(N)``; 0 for one point)."""
        n = self.per_point.numel()
        return self.per_point.std().item() / math.sqrt(n) if n > 1 else 0.0

    def to_dict(self, per_point: bool = True) -> dict:
        out = {"name": self.name, "mean": self.mean, "stderr": self.stderr, "num_points": self.per_point.numel(), **self.info}
        if per_point:
            out["per_point"] = self.per_point.detach().cpu().tolist()
        return out

    def __repr__(self) -> str:
        return f"Estimate({self.name}: {self.mean:.3f} ± {self.stderr:.3f} over {self.per_point.numel()} points)"
