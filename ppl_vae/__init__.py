"""ppl_vae: variational autoencoders in Pyro, and tools to measure why their bound is loose.

Layout: ``models/`` (Pyro model functions), ``guides/`` (guides), ``ppl_vae/`` (the engine: data, training,
estimators, plots, CLI). See :mod:`ppl_vae.conventions` for what a model/guide pair must follow.
"""
__version__ = "0.1.0"
