"""The result of an estimator: one value per data point, with its mean and standard error."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Estimate", "PER_POINT_SUFFIX"]

PER_POINT_SUFFIX = "_per_point"
"""``info[name + PER_POINT_SUFFIX]``: an ``(N,)`` tensor of a per-point diagnostic whose mean is ``info[name]``."""


@dataclass
class Estimate:
    """``per_point``: ``(N,)`` nats per data point; ``name`` says which estimator (e.g. ``"iwae_5000"``);
    ``info`` holds settings (number of samples, ...) and per-point diagnostics: an ``(N,)`` tensor under
    ``"<name>_per_point"`` (e.g. AIS's ``accept_rate_per_point``) whose float64 mean is ``info["<name>"]``."""

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
        """``name``, ``mean``, ``stderr``, ``num_points``, the settings and, if ``per_point``, the values per point
        (``per_point``) and the per-point diagnostics (as lists); :meth:`from_dict` reads it back.

        :param bool per_point: include the per-point values.
        :returns: a JSON-serializable dict.
        """
        info = {k: v.detach().cpu().tolist() if isinstance(v, torch.Tensor) else v for k, v in self.info.items()
                if per_point or not isinstance(v, torch.Tensor)}
        out = {"name": self.name, "mean": self.mean, "stderr": self.stderr, "num_points": self.per_point.numel(), **info}
        if per_point:
            out["per_point"] = self.per_point.detach().cpu().tolist()
            out["dtype"] = str(self.per_point.dtype).removeprefix("torch.")
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Estimate:
        """The estimate :meth:`to_dict` wrote (with its per-point values), exactly: the values come back in their
        dtype (a float32 value written as JSON reads back bitwise).

        :param dict data: :meth:`to_dict`'s output, ``per_point=True``.
        :returns: the estimate.
        :raises ValueError: if ``data`` has no per-point values.
        """
        if "per_point" not in data:
            raise ValueError(f"Expected an estimate written with its per-point values, got only {sorted(data)}")
        dtype = getattr(torch, data.get("dtype", "float32"))
        skip = {"name", "mean", "stderr", "num_points", "per_point", "dtype"}
        info = {k: torch.tensor(v, dtype=torch.float64) if k.endswith(PER_POINT_SUFFIX) else v
                for k, v in data.items() if k not in skip}
        values = torch.tensor([math.nan if v is None else v for v in data["per_point"]], dtype=dtype)
        return cls(data["name"], values, info)

    @classmethod
    def concat(cls, parts: Sequence[Estimate]) -> Estimate:
        """The estimates of consecutive sets of points as one: per-point values and diagnostics concatenated, the
        diagnostics' means recomputed (so the result is exactly the estimate of one call on all the points).

        :param parts: estimates with the same name and settings.
        :returns: the estimate of all their points.
        :raises ValueError: for no parts, or parts with other names or settings.
        """
        if not parts:
            raise ValueError("Expected at least one estimate to concatenate, got none")
        first = parts[0]
        settings = {k: v for k, v in first.info.items() if not _diagnostic(first.info, k)}
        for p in parts[1:]:
            other = {k: v for k, v in p.info.items() if not _diagnostic(p.info, k)}
            if p.name != first.name or other != settings:
                raise ValueError(f"Expected estimates of the same estimator and settings, got {first.name!r} "
                                 f"{settings} and {p.name!r} {other}")
        info = dict(first.info)
        for k, v in first.info.items():
            if isinstance(v, torch.Tensor) and k.endswith(PER_POINT_SUFFIX):
                values = torch.cat([p.info[k] for p in parts])
                info[k] = values
                info[k[: -len(PER_POINT_SUFFIX)]] = values.mean().item()
        return cls(first.name, torch.cat([p.per_point for p in parts]), info)

    def __repr__(self) -> str:
        return f"Estimate({self.name}: {self.mean:.3f} ± {self.stderr:.3f} over {self.per_point.numel()} points)"


def _diagnostic(info: dict, key: str) -> bool:
    """Whether ``info[key]`` is a per-point diagnostic or the mean of one."""
    return key.endswith(PER_POINT_SUFFIX) or f"{key}{PER_POINT_SUFFIX}" in info
