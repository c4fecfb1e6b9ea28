"""The error raised for data that cannot be used."""
from __future__ import annotations

import torch
from pyro.infer.util import is_validation_enabled

__all__ = ["DataError", "check_finite"]


class DataError(ValueError):
    """Data that cannot be used as they are: a corrupt or truncated IDX file, images of an unexpected size or type,
    NaN pixels, or pixels outside the range the likelihood can score. The message names the file or the tensor.

    A subclass of :class:`ValueError`; the command line reports it as a runtime failure (exit status 1), since the
    data, not the command, must change."""


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Refuse floating-point data with NaN or infinite values while Pyro's validation is enabled (the default),
    on the paths that score ``x`` with validation switched off (AIS and NUTS potentials, prior Monte Carlo).

    :param x: ``(N, ...)`` data.
    :param str name: how to call ``x`` in the message.
    :raises DataError: naming the first bad rows.
    """
    if is_validation_enabled() and isinstance(x, torch.Tensor) and torch.is_floating_point(x):
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1))
        if bad.any():
            rows = bad.any(-1).nonzero().flatten()[:5].tolist()
            raise DataError(f"{name} contains NaN or infinite values (first bad rows: {rows})")
