"""The search's Hydra config: structured schema (type-checked), the search_spaces/ files as a Hydra group, resolvers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from nas.profiles import REPO_ROOT
from nas.study import space

GROUP = "search_space"  # the Hydra group name; its options are the files of the top-level folder search_spaces/


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

    name: str = "none"  # none (the default) | pareto | median | successive_halving | hyperband
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
    # flops_ratio | time_ratio | memory_ratio | unique_params_ratio | kv_cache_ratio | prefill_time_ratio |
    # decode_time_ratio (Any: OmegaConf has no str-or-list type, so
    # nas.study.objectives.check_compute does the type check in validate)
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
    n_trials: int = 12
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


def spaces_dir() -> str:
    """The search_spaces/ folder: $NAS_SEARCH_SPACES, else the repository's."""
    return os.environ.get("NAS_SEARCH_SPACES") or str(space.SPACES_DIR)


def register() -> None:
    """Register the schema, each search_spaces/*.yaml as an option of the group `search_space` and the
    ${nas_root:} resolver (idempotent).

    Hydra's ConfigStore keeps each file's own defaults list (its task, target or proxy). A file that is not a YAML
    mapping is registered as its one-line problem (space.BROKEN), reported only by a search that chooses it.
    """
    store = ConfigStore.instance()
    store.store(name="search_schema", node=SearchConf)
    for path in sorted(Path(spaces_dir()).glob("*.yaml")):
        try:
            node = OmegaConf.load(path)  # Hydra's own YAML reading
            problem = None if isinstance(node, DictConfig) else \
                f"{path}: expected a mapping with keys name, params, baseline, not a list"
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            problem = space.yaml_problem(path, err)
        store.store(group=GROUP, name=path.stem, node={"name": path.stem, space.BROKEN: problem} if problem else node)
    if not OmegaConf.has_resolver("nas_root"):
        OmegaConf.register_new_resolver("nas_root", lambda: str(REPO_ROOT))
