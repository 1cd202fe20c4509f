"""Sweeps: Optuna studies over ordinary training runs, with a forgetting-aware objective."""
