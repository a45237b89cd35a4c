"""Hyperparameter search for the seed's SE + criss-cross-attention network (Optuna-based)."""
