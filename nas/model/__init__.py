"""The efficient transformer and its knobs."""

from __future__ import annotations

from typing import Any

from nas.model.config import ArchConfig, PrecisionConfig

__all__ = ["ArchConfig", "PrecisionConfig", "TransformerLM"]


def __getattr__(name: str) -> Any:
    """Import the model lazily, so config-only users (search-space parsing) stay light."""
    if name == "TransformerLM":
        from nas.model.transformer import TransformerLM

        return TransformerLM
    raise AttributeError(f"module 'nas.model' has no attribute {name!r}")
