"""Estimators of log p(x) and its bounds, per data point, for any model/guide pair."""
from .ais import ais, annealing_schedule
from .elbo import elbo
from .estimate import Estimate
from .iwae import IWAE_ELBO, iwae_bound
from .log_weights import log_weights
from .prior_mc import prior_mc

__all__ = ["Estimate", "IWAE_ELBO", "ais", "annealing_schedule", "elbo", "iwae_bound", "log_weights", "prior_mc"]
