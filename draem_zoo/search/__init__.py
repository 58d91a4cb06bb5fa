"""Distributed hyperparameter search per category (the only package that imports Ray).

``space`` loads search-space files (Optuna define-by-run functions); ``trial``, ``category`` and
``driver`` run the search with Ray Tune (Optuna + ASHA) over Ray Train (DDP) on a cluster, each
trial a :func:`draem_zoo.pipeline.train_category` that also measures its model's speed (``speed``);
``study`` keeps each category's Optuna study in a journal file optuna-dashboard opens; ``results``
hands on the exported best model per category, the leaderboard and the backbone comparison,
``front`` the accuracy-speed front (and ``--front N``'s members), ``importance`` the fANOVA and
PED-ANOVA importance of every searched parameter, ``status`` the progress table.
"""
