"""Diagnostics of trained models: posterior collapse (KL per dimension, active units) and sample quality
(classifier-based inception score, Fréchet distance, diversity)."""
from .classifier import Classifier, accuracy, train_classifier
from .collapse import ActiveUnits, active_units, kl_per_dimension
from .sample_metrics import classifier_inception_score, diversity, frechet_distance, gaussian_frechet_distance

__all__ = ["ActiveUnits", "Classifier", "accuracy", "active_units", "classifier_inception_score", "diversity",
           "frechet_distance", "gaussian_frechet_distance", "kl_per_dimension", "train_classifier"]
