"""Small neural-network building blocks shared by models and guides."""
from __future__ import annotations

import torch
from pyro.infer.util import is_validation_enabled
from torch import nn

from ppl_vae.data.errors import DataError
from ppl_vae.data.splits import check_images

__all__ = ["mlp", "ACTIVATIONS", "BernoulliDecoder", "encoder_input"]

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str = "elu") -> nn.Sequential:
    """``in_dim -> hidden[0] -> ... -> out_dim`` with ``activation`` between layers (none after the last).

    Works on inputs of shape ``(..., in_dim)``, so extra leading sample dimensions pass through.

    :param int in_dim: input size.
    :param tuple hidden: hidden layer sizes (may be empty).
    :param int out_dim: output size.
    :param str activation: a key of :data:`ACTIVATIONS`.
    :returns: the network.
    :raises ValueError: for an unknown activation or a layer size that is not a positive integer.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    dims = (in_dim, *hidden, out_dim)
    bad = [d for d in dims if isinstance(d, bool) or not isinstance(d, int) or d < 1]
    if bad:
        raise ValueError(f"Expected layer sizes that are positive integers, got {bad} in {in_dim} -> {tuple(hidden)} -> {out_dim}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def encoder_input(x: torch.Tensor, x_dim: int) -> torch.Tensor:
    """The data an encoder reads, flattened to ``(N, x_dim)``; refused with a message naming the problem when the
    size differs from ``x_dim`` or — while Pyro's validation is enabled, as by default — a floating-point value is
    NaN or infinite (the likelihood's own range is the model's to check: :meth:`BernoulliDecoder.check_data`).

    :param x: ``(N, ...)`` data with ``x_dim`` values per point (any dtype: counts and codes too).
    :param int x_dim: the encoder's input size.
    :returns: ``x`` as ``(N, x_dim)``.
    :raises DataError: naming the shape or the first bad rows.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x[0].numel() != x_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"Expected x of shape (N, {x_dim}) (the encoder's input size), got {shape}")
    x = x.reshape(x.shape[0], -1)
    if is_validation_enabled() and torch.is_floating_point(x) and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(-1).nonzero().flatten()[:5].tolist()
        raise DataError(f"x contains NaN or infinite values (first bad rows: {bad})")
    return x


class BernoulliDecoder:
    """Mixin for models whose ``self.decoder`` maps latents ``(..., z_dim)`` to Bernoulli logits of ``self.x_dim``
    pixels and whose generative latent is ``N(0, I)`` of size ``self.z_dim``."""

    def check_data(self, x: torch.Tensor) -> None:
        """Refuse data the Bernoulli likelihood cannot score, wherever the model is called from (estimators, training,
        the gap, NUTS): ``x`` must be ``(N, x_dim)``, and — while Pyro's validation is enabled, as by default
        (:func:`pyro.enable_validation`) — finite with every pixel in ``[0, 1]`` (intensities there are scored as
        cross-entropy). Images scaled to 0-255 would otherwise give "log-likelihoods" far above 0.

        :param x: the observed images.
        :raises DataError: naming the shape or the values found.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.x_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"Expected x of shape (N, {self.x_dim}) (flat images of the model's x_dim), got {shape}")
        if is_validation_enabled():
            check_images(x, self.x_dim, likelihood="bernoulli", name="x")

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
