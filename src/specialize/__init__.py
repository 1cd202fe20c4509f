"""specialize: turn a general language model into a domain specialist, and prove the result."""

__version__ = "0.1.0"
