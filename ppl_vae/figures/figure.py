"""Figures as :class:`matplotlib.figure.Figure` objects, never through ``pyplot``: the library draws without
touching the process's matplotlib backend or pyplot's global figure list (a notebook keeps its own backend).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure", "image_grid"]


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **subplots_kwargs):
    """A new :class:`~matplotlib.figure.Figure` and its axes (``Figure.subplots(nrows, ncols, **subplots_kwargs)``).

    :param tuple figsize: ``(width, height)`` in inches.
    :returns: ``(figure, axes)``; ``axes`` as :meth:`matplotlib.figure.Figure.subplots` returns them.
    """
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots_kwargs)


def save_figure(fig: Figure, path, dpi: int = 120) -> Path:
    """Save ``fig`` as ``path`` (creating its directory) and return the path.

    :param fig: a :class:`~matplotlib.figure.Figure`.
    :param path: the file; its suffix picks the format (``.png``, ``.pdf``, ``.svg``).
    :param int dpi: resolution of raster formats.
    :returns: ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def image_grid(images: torch.Tensor, rows: int, side: int | None = None) -> torch.Tensor:
    """Tile ``images (rows * cols, side * side)`` into one ``(rows * side, cols * side)`` picture.

    :param images: flat square images, one per row.
    :param int rows: rows of the grid.
    :param side: the images' side in pixels; default the square root of their size (28 for 784 pixels).
    :returns: the picture.
    :raises ValueError: if the images are not square (``side * side`` pixels).
    """
    side = math.isqrt(images.shape[1]) if side is None else side
    if side * side != images.shape[1]:
        raise ValueError(f"Expected square images (side * side pixels) to tile, got {images.shape[1]} pixels per image")
    cols = images.shape[0] // rows
    x = images[: rows * cols].reshape(rows, cols, side, side).permute(0, 2, 1, 3)
    return x.reshape(rows * side, cols * side)
