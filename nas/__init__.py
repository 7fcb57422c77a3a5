"""nas: neural-architecture search and sparsity tuning for efficient transformers."""

__version__ = "0.1.0"
