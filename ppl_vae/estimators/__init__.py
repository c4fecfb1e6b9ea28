"""Estimators of log p(x) and its bounds, per data point, for any model/guide pair."""
from .elbo import elbo
from .estimate import Estimate
from .iwae import IWAE_ELBO, iwae_bound
from .log_weights import log_weights

__all__ = ["Estimate", "IWAE_ELBO", "elbo", "iwae_bound", "log_weights"]
