"""Data: formats, validation, curation, leakage checks, splits, mixing, chat templates."""
