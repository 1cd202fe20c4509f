"""Models: the catalog, materialising the embedded default, loading, info, tiny test models."""
