"""Estimators of log p(x) and its bounds, per data point, for any model/guide pair."""
from .ais import ais, annealing_schedule
from .bdmc import BDMC, bdmc
from .bounds import elbo_and_iwae
from .elbo import elbo
from .estimate import Estimate
from .iwae import iwae_bound
from .log_weights import log_weights
from .prior_mc import prior_mc
from .psis import KHAT_RELIABLE, khat_threshold, pareto_khat
from .selection import select_by_pilot

__all__ = ["Estimate", "ais", "BDMC", "bdmc", "elbo_and_iwae", "annealing_schedule", "elbo", "iwae_bound", "log_weights", "prior_mc",
           "pareto_khat", "khat_threshold", "KHAT_RELIABLE", "select_by_pilot"]
