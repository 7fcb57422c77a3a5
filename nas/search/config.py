"""The search's Hydra config: structured schema (type-checked), the search_spaces/ group source and resolvers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigResult
from hydra._internal.core_plugins.file_config_source import FileConfigSource
from omegaconf import MISSING, OmegaConf

from nas.cli import exit_with_error
from nas.space import SPACES_DIR, yaml_problem
from nas.profiles import REPO_ROOT

GROUP = "search_space"  # the Hydra group name; its files live in the top-level folder search_spaces/


@dataclass
class RayConf:
    """Where and how trials run."""

    address: Optional[str] = None  # None: a local Ray started by the search; "auto" or host:port joins a cluster
    num_cpus: Optional[int] = None  # local Ray only; None = every core
    num_gpus: Optional[int] = None
    cpus_per_trial: int = 1  # also the torch threads of a trial
    gpus_per_trial: float = 0.0  # fractions share a GPU
    max_concurrent: int = 2
    storage_path: Optional[str] = None  # Ray Tune's own result folder; None = a temp dir removed afterwards


@dataclass
class SamplerConf:
    """Optuna sampler (conf/sampler/*.yaml)."""

    name: str = "tpe"  # tpe | nsga2 | random | grid
    population_size: int = 8  # nsga2
    n_startup_trials: int = 4  # tpe: random trials before the model
    multivariate: bool = True  # tpe


@dataclass
class PrunerConf:
    """Optuna pruner on the quality metric at rungs (conf/pruner/*.yaml)."""

    name: str = "pareto"  # pareto | median | successive_halving | hyperband | none
    n_startup_trials: int = 3  # median, pareto: trials that must reach a rung before any is stopped there
    n_warmup_steps: int = 0  # median, pareto: no pruning before this training step
    min_resource: int = 1  # successive_halving, hyperband (training steps)
    max_resource: int = 300  # hyperband (training steps)
    reduction_factor: int = 2  # successive_halving, hyperband
    margin: float = 0.01  # pareto: relative quality margin a dominator must beat
    min_dominators: int = 2  # pareto: dominators needed to stop a trial


@dataclass
class StoreConf:
    """The SQL store (conf/store/*.yaml); the Optuna study lives in the same database."""

    url: Optional[str] = None  # SQLAlchemy URL; None = sqlite:///<repo>/trials_db/nas.db
    heartbeat_interval: int = 10  # seconds between a driver's heartbeats on its running trials
    grace_period: int = 60  # a trial whose driver has not beaten for this long is re-run by another driver


@dataclass
class ObjectivesConf:
    """Quality comes from the proxy task's objective; compute objectives are ratios to dense from the cost model."""

    # None: the search space's own `objectives` list; else one name or a list of names from
    # flops_ratio | time_ratio | memory_ratio | unique_params_ratio (Any: OmegaConf has no str-or-list type, so
    # nas.objectives.check_compute does the type check in validate)
    compute: Any = None


@dataclass
class ConstraintsConf:
    """Hard limits at target scale; violating configurations are never trained."""

    max_unique_params: Optional[float] = None
    max_memory_gb: Optional[float] = None


@dataclass
class SearchConf:
    """Top-level schema of conf/search.yaml."""

    study: str = MISSING
    n_trials: int = 16
    seed: int = 0
    time_budget_s: Optional[float] = None
    budget_tokens: Optional[int] = None  # proxy training tokens per trial; None = the proxy's budget
    device: str = "auto"
    progress: bool = True  # one line per finished trial
    dashboard: bool = True  # build dashboards/<study>.html at the end
    adequacy: str = "enforce"  # proxy adequacy check of a new study: enforce | warn | skip
    ray: RayConf = field(default_factory=RayConf)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    store: StoreConf = field(default_factory=StoreConf)
    objectives: ObjectivesConf = field(default_factory=ObjectivesConf)
    constraints: ConstraintsConf = field(default_factory=ConstraintsConf)
    search_space: Any = MISSING
    proxy: Any = MISSING
    task: Any = MISSING
    hardware: Any = MISSING
    target: Any = MISSING


class SearchSpaceSource(FileConfigSource):
    """Serves the top-level search_spaces/ folder as the Hydra group `search_space` (scheme nas-spaces://)."""

    @staticmethod
    def scheme() -> str:
        return "nas-spaces"

    def _inner(self, config_path: str) -> str | None:
        head, _, tail = config_path.strip("/").partition("/")
        return (tail or "") if head == GROUP else ("" if head == "" else None)

    def load_config(self, config_path: str) -> ConfigResult:
        """The space's YAML; a file that is not a YAML mapping ends the command with one line, exit 2."""
        inner = self._inner(config_path)
        path = inner if inner is not None else f"__not_a_group__/{config_path}"
        file = Path(self.path) / self._normalize_file_name(path)
        try:
            result = super().load_config(path)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            exit_with_error(yaml_problem(file, err))
        if not OmegaConf.is_dict(result.config):
            exit_with_error(f"{file}: a search space is a YAML mapping (name, params, ...), not a "
                            f"{type(OmegaConf.to_container(result.config)).__name__}")
        return result

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        inner = self._inner(config_path)
        if inner == "" and config_path.strip("/") == "":
            return True
        return inner is not None and super().is_group(inner)

    def is_config(self, config_path: str) -> bool:
        inner = self._inner(config_path)
        return bool(inner) and super().is_config(inner)

    def list(self, config_path: str, results_filter: Any) -> list[str]:
        inner = self._inner(config_path)
        if inner is None or inner:  # nothing below the group's own folder
            return []
        if config_path.strip("/") == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if results_filter not in (None, ObjectType.CONFIG):
            return []
        return sorted(p.stem for p in Path(self.path).glob("*.yaml"))


def spaces_dir() -> str:
    """The search_spaces/ folder: $NAS_SEARCH_SPACES, else the repository's."""
    return os.environ.get("NAS_SEARCH_SPACES") or str(SPACES_DIR)


def register() -> None:
    """Register the schema, the search_spaces/ source and the ${nas_spaces:} / ${nas_root:} resolvers (idempotent)."""
    ConfigStore.instance().store(name="search_schema", node=SearchConf)
    Plugins.instance().register(SearchSpaceSource)
    if not OmegaConf.has_resolver("nas_spaces"):
        OmegaConf.register_new_resolver("nas_spaces", spaces_dir)
    if not OmegaConf.has_resolver("nas_root"):
        OmegaConf.register_new_resolver("nas_root", lambda: str(REPO_ROOT))
