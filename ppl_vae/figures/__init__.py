"""Figures as :class:`matplotlib.figure.Figure` objects saved to files (the backend is never switched)."""
from .figure import image_grid, new_figure, save_figure

__all__ = ["image_grid", "new_figure", "save_figure"]
