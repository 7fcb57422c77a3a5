"""`python -m nas.search search_space=sparse_attn`: Hydra entry point of the architecture search."""

from __future__ import annotations

import sys
from pathlib import Path

from nas.search.driver import SearchError, SearchResult, run_search, validate

__all__ = ["SearchError", "SearchResult", "main", "run_search", "validate"]


def main() -> None:
    """Compose conf/search.yaml with the command-line overrides and run the search (exit 2 on bad input)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, open_dict

    from nas.profiles import conf_dir, fail
    from nas.search import config

    try:
        config.register()
    except ValueError as err:  # a search_spaces/ file that is not YAML
        fail(str(err))

    @hydra.main(config_path=str(conf_dir()), config_name="search", version_base="1.3")
    def run(cfg: DictConfig) -> None:
        choices = HydraConfig.get().runtime.choices
        with open_dict(cfg):
            cfg.task.setdefault("name", choices.get("task"))  # conf/task files carry no name of their own
        choice = choices.get(config.GROUP)
        source = str(Path(config.spaces_dir()) / f"{choice}.yaml")
        try:
            run_search(cfg, space_source=source)
        except ValueError as err:  # SearchError, SpaceError and the ArchConfig / profile checks
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    run()
