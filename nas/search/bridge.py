"""Optuna side of the search: the study in the store's database, sampling, rung reports, pruning and tells.

The main study is multi-objective (quality, then k >= 1 compute objectives, all minimised). Optuna's pruners
are single-objective, so every trial also has a twin in the study `<name>.rungs` (one objective: quality,
minimised) that receives the rung reports and whose pruner decides; the compute objectives are stored on the
twin as a user attr (a list) for ParetoPruner.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from nas.objectives import QUALITY, names, values_dict
from nas.pareto_pruner import COMPUTE_ATTR, ParetoPruner
from nas.search.config import PrunerConf, SamplerConf
from nas.space import MAX_GRID, SearchSpec, SpaceError
from nas.store import tune_sqlite

RUNG_SUFFIX = ".rungs"
SAMPLERS = ("nsga2", "tpe", "random", "grid")
PRUNERS = ("pareto", "median", "successive_halving", "hyperband", "none")
INTERRUPTED = "interrupted: the search driver stopped before this trial finished; its configuration is re-run"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(conf: SamplerConf, seed: int, spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """The configured Optuna sampler, seeded."""
    if conf.name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=conf.population_size, seed=seed)
    if conf.name == "tpe":
        with warnings.catch_warnings():  # multivariate / group are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(n_startup_trials=conf.n_startup_trials, multivariate=conf.multivariate,
                                              group=conf.multivariate, seed=seed)  # group: conditional params
    if conf.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if conf.name == "grid":
        for p in spec.params:
            if p.type == "float" and not p.step:
                raise SpaceError(f"{spec.source}: params.{p.name}.step=None is invalid: the grid sampler needs a "
                                 "step for float parameters")
            if len(p.grid_values()) > MAX_GRID:
                raise SpaceError(f"{spec.source}: params.{p.name} has {len(p.grid_values())} grid values: "
                                 f"at most {MAX_GRID} (add a larger step)")
        return optuna.samplers.GridSampler(spec.grid(), seed=seed)
    raise ValueError(f"sampler.name={conf.name!r} is invalid: expected one of {', '.join(SAMPLERS)}")


def make_pruner(conf: PrunerConf) -> optuna.pruners.BasePruner:
    """The configured pruner, acting on the quality reported at rungs."""
    if conf.name == "pareto":
        return ParetoPruner(margin=conf.margin, min_dominators=conf.min_dominators,
                            n_startup_trials=conf.n_startup_trials, n_warmup_steps=conf.n_warmup_steps)
    if conf.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=conf.n_startup_trials, n_warmup_steps=conf.n_warmup_steps)
    if conf.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=conf.min_resource,
                                                      reduction_factor=conf.reduction_factor)
    if conf.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=conf.min_resource, max_resource=conf.max_resource,
                                              reduction_factor=conf.reduction_factor)
    if conf.name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner.name={conf.name!r} is invalid: expected one of {', '.join(PRUNERS)}")


def make_storage(url: str) -> RDBStorage:
    """Optuna's RDB storage on the store's database."""
    if not url.startswith("sqlite"):
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    tune_sqlite(storage.engine)
    return storage


@dataclass
class Sampled:
    """A configuration ready to train: Optuna trials (main and rung twin), knobs, archs and its cost."""

    number: int
    params: dict[str, Any]
    knobs: dict[str, Any]
    arch: dict[str, Any]
    target_arch: dict[str, Any]
    cost: dict[str, Any]
    compute: tuple[float, ...]  # in the bridge's compute_keys order
    rerun_of: int | None
    trial: optuna.Trial
    rung_trial: optuna.Trial
    pruned: bool = False
    state: str = "RUNNING"
    last_quality: float | None = None
    error: str | None = None


Evaluator = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]
"""knobs -> (proxy arch dict, target arch dict, cost dict)."""


class OptunaBridge:
    """Owns the Optuna studies of one search and turns asks, rung reports and outcomes into Optuna calls."""

    def __init__(self, storage: RDBStorage, name: str, spec: SearchSpec, sampler: optuna.samplers.BaseSampler,
                 pruner: optuna.pruners.BasePruner, compute_keys: tuple[str, ...], evaluate: Evaluator,
                 check: Callable[[dict[str, Any]], str | None]) -> None:
        self.name, self.spec, self.compute_keys = name, spec, tuple(compute_keys)
        self.evaluate, self.check = evaluate, check
        metrics = names(self.compute_keys)
        self.study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                         directions=["minimize"] * len(metrics), load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(metrics)
        self.rungs = optuna.create_study(storage=storage, study_name=name + RUNG_SUFFIX, pruner=pruner,
                                         sampler=optuna.samplers.RandomSampler(), direction="minimize",
                                         load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.rungs.set_metric_names([QUALITY])

    # ---- study lifecycle -----------------------------------------------------------------
    def enqueue_baseline(self) -> None:
        """Queue the dense baseline so it is the first trial asked."""
        self.study.enqueue_trial(dict(self.spec.baseline), user_attrs={"baseline": True})

    def recover(self) -> list[int]:
        """Fail the trials a killed driver left RUNNING and queue their configurations again; their numbers."""
        numbers = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            self.study.tell(t.number, state=TrialState.FAIL)
            self.study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number,
                                                           "baseline": t.user_attrs.get("baseline", False)})
            numbers.append(t.number)
        for t in self.rungs.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.rungs.tell(t.number, state=TrialState.FAIL)
        return numbers

    def n_done(self) -> int:
        """Trials that count against n_trials: finished ones, not interrupted, not rejected by constraints."""
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=finished)
                   if not t.user_attrs.get("interrupted") and "infeasible" not in t.user_attrs)

    def front(self) -> list[optuna.trial.FrozenTrial]:
        """The Pareto front of completed trials over all objectives (Optuna's own computation), by compute.

        One trial per configuration: a configuration sampled again trains to the same point (same seed).
        """
        first: dict[str, optuna.trial.FrozenTrial] = {}
        for t in sorted(self.study.best_trials, key=lambda t: t.number):
            first.setdefault(json.dumps(t.params, sort_keys=True, default=str), t)
        return sorted(first.values(), key=lambda t: (t.values[1:], t.values[0]))

    def objectives(self, compute: tuple[float, ...], quality: float | None = None) -> dict[str, float]:
        """Objective name -> value as the store keeps it (quality only when known)."""
        return values_dict(self.compute_keys, compute, quality)

    # ---- per trial -----------------------------------------------------------------------
    def ask(self, on_infeasible: Callable[[Sampled, str], None], max_tries: int = 1000) -> Sampled:
        """The next feasible configuration (the baseline and re-runs come first from Optuna's queue)."""
        for _ in range(max_tries):
            trial = self.study.ask()
            params = self.spec.suggest(trial)
            knobs = self.spec.knobs(params)
            arch, target_arch, cost = self.evaluate(knobs)
            compute = tuple(float(cost[k]) for k in self.compute_keys)
            trial.set_user_attr(COMPUTE_ATTR, list(compute))
            trial.set_user_attr("cost", cost)
            rung_trial = self.rungs.ask()
            rung_trial.set_user_attr(COMPUTE_ATTR, list(compute))
            rung_trial.set_user_attr("number", trial.number)
            s = Sampled(trial.number, params, knobs, arch, target_arch, cost, compute,
                        trial.user_attrs.get("rerun_of"), trial, rung_trial)
            reason = self.check(cost)
            if reason is None:
                return s
            trial.set_user_attr("infeasible", reason)
            self.study.tell(trial, state=TrialState.PRUNED)
            self.rungs.tell(rung_trial, state=TrialState.PRUNED)
            on_infeasible(s, reason)
        raise ValueError(f"constraints rejected {max_tries} configurations in a row: relax constraints.*")

    def report(self, s: Sampled, step: int, quality: float) -> bool:
        """Record the quality at a rung on the rung study; True when its pruner stops the trial here.

        (Not on the main study: Optuna's multi-objective TPE cannot rank pruned trials with intermediate values.)
        """
        s.last_quality = quality
        if not math.isfinite(quality):
            return False
        s.rung_trial.report(quality, step)
        s.pruned = s.rung_trial.should_prune()
        return s.pruned

    def finish(self, s: Sampled, result: dict[str, Any] | None, error: str | None) -> str:
        """Tell both studies how the trial ended (from its last result); returns COMPLETE, PRUNED or FAIL."""
        result = result or {}
        quality = result.get("quality")
        if error is None and "error" in result:
            error = result["error"]
        if error is None and not s.pruned and not result.get("final"):
            error = "stopped before its final rung (time_budget_s reached or the run was cut short)"
        if error is None and not s.pruned and not (quality is not None and math.isfinite(quality)):
            error = f"final quality {quality!r} is not a finite number"
        if error is not None:  # Ray's own error text, when its error hook ran first, is the more specific
            state, s.error = TrialState.FAIL, s.error or error
            self.study.tell(s.trial, state=state)
            self.rungs.tell(s.rung_trial, state=state)
        elif s.pruned:
            state = TrialState.PRUNED
            self.study.tell(s.trial, state=state)
            self.rungs.tell(s.rung_trial, state=state)
        else:
            state, s.last_quality = TrialState.COMPLETE, quality
            self.study.tell(s.trial, [quality, *s.compute])
            self.rungs.tell(s.rung_trial, quality)
        s.state = state.name
        return s.state
