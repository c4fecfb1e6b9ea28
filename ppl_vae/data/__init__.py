"""Real image datasets (IDX files), the embedded Fashion-MNIST subset, binarization and loaders."""
from .errors import DataError, check_finite
from .idx import read_idx, write_idx
from .sources import DATASETS, RawDataset, find_dataset, load_raw
from .splits import BINARIZATIONS, ImageSet, Splits, check_images, load_splits, make_loader

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "DataError",
    "check_finite",
    "ImageSet",
    "RawDataset",
    "Splits",
    "check_images",
    "find_dataset",
    "load_raw",
    "load_splits",
    "make_loader",
    "read_idx",
    "write_idx",
]
