"""Distributed hyperparameter search (the only package that imports Ray).

``space`` loads search-space files (Optuna define-by-run functions); ``results`` writes
leaderboards and the backbone comparison; ``trial``, ``category`` and ``driver`` run
the search with Ray Tune (Optuna + ASHA) over Ray Train (DDP) on a cluster.
"""
