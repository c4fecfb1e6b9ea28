"""Small neural-network building blocks shared by models and guides."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["mlp", "ACTIVATIONS", "BernoulliDecoder"]

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str = "elu") -> nn.Sequential:
    """``in_dim -> hidden[0] -> ... -> out_dim`` with ``activation`` between layers (none after the last).

    Works on inputs of shape ``(..., in_dim)``, so extra leading sample dimensions pass through.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    dims = (in_dim, *hidden, out_dim)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class BernoulliDecoder:
    """Mixin for models whose ``self.decoder`` maps latents ``(..., z_dim)`` to Bernoulli logits and whose
    generative latent is ``N(0, I)`` of size ``self.z_dim``."""

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``(..., x_dim)`` for latents ``z (..., z_dim)``."""
        return torch.sigmoid(self.decoder(z))

    @torch.no_grad()
    def sample(self, num: int, probs: bool = False) -> torch.Tensor:
        """``num`` images ``(num, x_dim)`` decoded from ``z ~ N(0, I)``: binary samples or pixel probabilities."""
        p = next(self.decoder.parameters())
        mean = self.decode(torch.randn(num, self.z_dim, device=p.device, dtype=p.dtype))
        return mean if probs else torch.bernoulli(mean)
