"""The error raised for data that cannot be used."""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Data that cannot be used as they are: a corrupt or truncated IDX file, images of an unexpected size or type,
    NaN pixels, or pixels outside the range the likelihood can score. The message names the file or the tensor.

    A subclass of :class:`ValueError`; the command line reports it as a runtime failure (exit status 1), since the
    data, not the command, must change."""
