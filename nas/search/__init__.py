"""`python -m nas.search search_space=sparse_attn`: Hydra entry point of the architecture search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.search.driver import SearchError, SearchResult, run_search, validate

__all__ = ["SearchError", "SearchResult", "main", "run_search", "validate"]


def main() -> None:
    """Compose conf/search.yaml with the command-line overrides and run the search (exit 2 on bad input)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, open_dict

    from nas.profiles import hydra_entry
    from nas.search import schema

    def name_task(cfg: DictConfig) -> None:
        with open_dict(cfg):
            cfg.task.setdefault("name", HydraConfig.get().runtime.choices.get("task"))  # task files carry none

    def run(plain: dict[str, Any]) -> None:
        choice = HydraConfig.get().runtime.choices.get(schema.GROUP)
        run_search(plain, space_source=str(Path(schema.spaces_dir()) / f"{choice}.yaml"))

    hydra_entry("search", run, prepare=schema.register, adjust=name_task)
