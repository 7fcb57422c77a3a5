"""Optuna side of the search: the study in the store's database, sampling, rung reports, pruning and tells.

The main study is multi-objective (quality, then k >= 1 compute objectives, all minimised). Optuna's pruners
are single-objective, so every trial also has a twin in the study `<name>.rungs` (one objective: quality,
minimised) that receives the rung reports and whose pruner decides; the compute objectives are stored on the
twin as a user attr (a list) for ParetoPruner.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

import optuna
import sqlalchemy.exc
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.trial import TrialState

from nas.model.config import ArchConfig
from nas.search import optuna_compat
from nas.search.schema import PrunerConf, SamplerConf
from nas.study.objectives import QUALITY, names, values_dict
from nas.study.pruner import COMPUTE_ATTR, ParetoPruner
from nas.study.space import MAX_GRID, SearchSpec, SpaceError
from nas.study.store import engine_kwargs, folder_lock, sqlite_file, tune_sqlite
from nas.study.view import config_key, free_ranking_line, front

RUNG_SUFFIX = ".rungs"
SAMPLERS = ("nsga2", "tpe", "random", "grid")
PRUNERS = ("pareto", "median", "successive_halving", "hyperband", "none")
INTERRUPTED = "interrupted: the search driver stopped before this trial finished; its configuration is re-run"
DRIVER_ATTR = "driver"  # {"host", "pid"} of the driver that asked a trial: a dead local driver is seen at once
DUPLICATE_ATTR = "duplicate_of"  # a configuration already trained: answered from that trial, never trained again
WITHDRAWN_ATTR = "withdrawn"  # asked beyond the study's total (another driver asked at the same moment): never run
RECLAIMED = "RECLAIMED"  # the outcome of a trial another driver declared dead (its configuration is re-run there)

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
        return AskTellGridSampler(spec.grid(), seed=seed)
    raise ValueError(f"sampler.name={conf.name!r} is invalid: expected one of {', '.join(SAMPLERS)}")


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell. Optuna's own calls Study.stop() when a trial is told that visits
    the last grid point, which raises outside Study.optimize, so the search crashed on its last grid trial; here
    the driver ends the search (n_trials, or every point trained)."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Nothing: the study is not stopped from here."""


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


def make_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 attempts: int = 3) -> RDBStorage:
    """Optuna's RDB storage on the store's database; with a heartbeat, a trial whose driver stopped beating for
    `grace_period` seconds is stale (Optuna's heartbeat mechanism). Drivers opening a new database at once race
    to create Optuna's tables: on SQLite they take turns (the folder's lock, as the store does); on a server the
    loser retries and finds them made."""
    path = sqlite_file(url)
    for attempt in range(attempts):
        try:
            with folder_lock(path.parent) if path is not None and path.parent.is_dir() else nullcontext():
                storage = optuna_compat.rdb_storage(url, engine_kwargs(url), heartbeat_interval, grace_period)
            break
        except sqlalchemy.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    if url.startswith("sqlite"):
        tune_sqlite(storage.engine)
    return storage


def this_driver() -> dict[str, Any]:
    """The identity a driver stamps on the trials it asks."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _dead_here(driver: dict[str, Any] | None) -> bool:
    """Whether `driver` ran on this host and its process is gone."""
    if not driver or driver.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(driver["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class SpaceExhausted(Exception):
    """The sampler keeps proposing configurations that are already trained or being trained."""


@dataclass
class Sampled:
    """A configuration ready to train: Optuna trials (main and rung twin), knobs, archs and its cost."""

    number: int
    params: dict[str, Any]
    knobs: dict[str, Any]
    arch: ArchConfig | None  # the proxy architecture, built once here; travels with the trial to its worker
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
    reclaimed: bool = False  # another driver declared this trial dead: its outcome is not ours to tell
    started: bool = False  # its store row exists


Evaluator = Callable[[dict[str, Any]], tuple[ArchConfig | None, dict[str, Any], dict[str, Any]]]
"""knobs -> (proxy ArchConfig (None where nothing trains), target arch dict, cost dict)."""


class OptunaBridge:
    """Owns the Optuna studies of one search and turns asks, rung reports and outcomes into Optuna calls."""

    def __init__(self, storage: RDBStorage | InMemoryStorage, name: str, spec: SearchSpec,
                 sampler: optuna.samplers.BaseSampler,
                 pruner: optuna.pruners.BasePruner, compute_keys: tuple[str, ...], evaluate: Evaluator,
                 check: Callable[[dict[str, Any]], str | None]) -> None:
        self.name, self.spec, self.compute_keys = name, spec, tuple(compute_keys)
        self.evaluate, self.check = evaluate, check
        self.storage, self.driver = storage, this_driver()
        self._ids = optuna_compat.TrialIds(storage, name)  # trial number -> storage id, main study
        self._rung_ids = optuna_compat.TrialIds(storage, name + RUNG_SUFFIX)
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
        """Queue the dense baseline so it is the first trial asked (once, whichever driver created the study)."""
        self.study.enqueue_trial(dict(self.spec.baseline), user_attrs={"baseline": True}, skip_if_exists=True)

    def reclaim(self, on_reclaimed: Callable[[int], object]) -> list[int]:
        """Fail the trials whose driver is gone and queue their configurations again; their numbers.

        Gone: its heartbeat is older than the storage's grace period (Optuna's `fail_stale_trials`, any host), or
        it ran on this host and its process is dead, or it never got a heartbeat nor a driver stamp (a driver
        killed while asking, or one from before heartbeats) and is older than the grace period. Another driver's
        live trials are never touched; a trial two drivers reclaim at once is failed and re-queued by one only.
        """
        failed: list[optuna.trial.FrozenTrial] = []
        grace = None
        if (beating := self._heartbeats()) is not None and (interval := beating.heartbeat_interval) is not None:
            grace = beating.grace_period or 2 * interval
            failed += optuna_compat.fail_stale_trials(self.study, beating)
        now = _now_local()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            driver = t.user_attrs.get(DRIVER_ATTR)
            unbeaten = grace is not None and driver is None and t.datetime_start is not None and \
                (now - t.datetime_start).total_seconds() > grace
            if not (_dead_here(driver) or unbeaten):
                continue
            try:
                if self.storage.set_trial_state_values(self._ids(t.number), state=TrialState.FAIL):
                    failed.append(t)
            except optuna.exceptions.UpdateFinishedTrialError:  # another driver got there first
                continue
        numbers = []
        for t in failed:
            self.study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number,
                                                           "baseline": t.user_attrs.get("baseline", False)})
            for r in self.rungs.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if r.user_attrs.get("number") == t.number:
                    _fail_quietly(self.storage, self._rung_ids(r.number))
            numbers.append(t.number)
            on_reclaimed(t.number)
        return numbers

    def beat(self, live: Iterable["Sampled"]) -> None:
        """Record a heartbeat for this driver's live trials."""
        for s in live:
            self._beat(s.trial.number)

    @property
    def heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats; None when the storage keeps none (e.g. Optuna's in-memory storage)."""
        beating = self._heartbeats()
        return None if beating is None else beating.heartbeat_interval

    def _heartbeats(self) -> RDBStorage | None:
        """The storage when it keeps heartbeats (Optuna's RDB storage with a heartbeat_interval), else None."""
        s = self.storage
        return s if isinstance(s, RDBStorage) and s.heartbeat_interval is not None else None

    def _beat(self, number: int) -> None:
        """Record a heartbeat for the main study's trial `number` (when the storage keeps heartbeats)."""
        if (beating := self._heartbeats()) is not None:
            beating.record_heartbeat(self._ids(number))

    def n_running(self) -> int:
        """Trials running now, in any driver."""
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def n_done(self) -> int:
        """Trials that count against n_trials: finished ones, not interrupted, not rejected by constraints."""
        return _n_done(self.study.get_trials(deepcopy=False))

    def interrupted(self) -> set[int]:
        """Numbers of the trials whose driver stopped before they finished: those queued again as a re-run."""
        return _interrupted(self.study.get_trials(deepcopy=False))

    def _beyond_total(self, trial: optuna.Trial, n_trials: int) -> bool:
        """True when `trial` would run past the study's total: the finished trials that count, plus the running
        ones asked up to it (by number: of two drivers asking at once the later trial yields), exceed n_trials.
        One read of the study, so that a trial finishing meanwhile is counted once, not missed."""
        trials = self.study.get_trials(deepcopy=False)
        ahead = sum(1 for t in trials if t.state == TrialState.RUNNING and t.number <= trial.number
                    and not _uncounted(t))
        return _n_done(trials) + ahead > n_trials

    def _withdraw(self, trial: optuna.Trial) -> None:
        """Give back a trial asked beyond the total: FAIL, marked withdrawn. A configuration it took from Optuna's
        queue (the baseline, a re-run) is queued again with its attributes, for whichever trial runs it; so is a
        grid point it drew, which the grid sampler would otherwise never propose again."""
        trial_id = self._ids(trial.number)
        fixed = optuna_compat.enqueued_params(self.storage, trial_id)
        if fixed is None and optuna_compat.drew_grid_point(self.storage, trial_id):  # counted visited once finished
            fixed = self.spec.suggest(trial)
        trial.set_user_attr(WITHDRAWN_ATTR, True)
        self.study.tell(trial, state=TrialState.FAIL)
        if fixed is not None:
            attrs = {k: v for k, v in trial.user_attrs.items() if k not in (DRIVER_ATTR, WITHDRAWN_ATTR)}
            self.study.enqueue_trial(fixed, user_attrs=attrs)

    def front(self, margin: float = 0.0) -> list[optuna.trial.FrozenTrial]:
        """The Pareto front of completed trials over all objectives, one per configuration, by compute, quality
        differences within `margin` ties (nas.study.view.front)."""
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return front(done, lambda t: t.values, margin)

    def free_ranking(self, margin: float = 0.0) -> str:
        """Completed trials, one per configuration, against the free ranking by the primary compute objective
        (nas.study.view.free_ranking_line)."""
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return free_ranking_line(done, lambda t: t.values, self.compute_keys[0], margin)

    def objectives(self, compute: tuple[float, ...], quality: float | None = None) -> dict[str, float]:
        """Objective name -> value as the store keeps it (quality only when known)."""
        return values_dict(self.compute_keys, compute, quality)

    # ---- per trial -----------------------------------------------------------------------
    def ask(self, on_infeasible: Callable[[Sampled, str], None], max_tries: int = 1000,
            n_trials: int | None = None) -> Sampled | None:
        """The next feasible configuration not trained before (the baseline and re-runs come first from Optuna's
        queue). A configuration already trained (or being trained) is told its known outcome and not counted.

        None (ask again later) when the study's total `n_trials` is reached by trials other drivers asked at the
        same moment, or when the grid's points not yet finished are all running.
        SpaceExhausted when the grid sampler's every point has finished and nothing is queued."""
        grid = isinstance(self.study.sampler, optuna.samplers.GridSampler)
        duplicates = 0
        for _ in range(max_tries):
            if grid and self._grid_spent():
                n_points = math.prod(len(values) for values in self.spec.grid().values())
                raise SpaceExhausted(f"every one of the grid's {n_points} points has been trained or is training")
            trial = _ask(self.study)
            self._beat(trial.number)  # beat, then stamp: a trial without a stamp has never beaten
            trial.set_user_attr(DRIVER_ATTR, self.driver)
            if n_trials is not None and self._beyond_total(trial, n_trials):
                self._withdraw(trial)
                return None
            params = self.spec.suggest(trial)
            earlier = self._answer_duplicate(trial, params)
            if earlier is not None:
                if grid and earlier == TrialState.RUNNING:
                    return None  # the grid sampler proposes a running point only when no other is left: wait
                duplicates += 1
                continue
            knobs = self.spec.knobs(params)
            arch, target_arch, cost = self.evaluate(knobs)
            compute = tuple(float(cost[k]) for k in self.compute_keys)
            trial.set_user_attr(COMPUTE_ATTR, list(compute))
            trial.set_user_attr("cost", cost)
            rung_trial = _ask(self.rungs)
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
        if duplicates == max_tries:
            raise SpaceExhausted(f"the sampler proposed {max_tries} configurations in a row that are already "
                                 "trained: the space is exhausted")
        raise ValueError(f"constraints rejected {max_tries - duplicates} configurations (and {duplicates} were "
                         "already trained) in a row: relax constraints.*")

    def _grid_spent(self) -> bool:
        """Whether the grid sampler has had every point finished (Optuna counts a failed one too) with nothing
        queued (a re-run of an interrupted point, a withdrawn one)."""
        sampler = self.study.sampler  # callers ask only for a grid sampler
        return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(self.study) and \
            not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))

    def _answer_duplicate(self, trial: optuna.Trial, params: dict[str, Any]) -> TrialState | None:
        """Tell `trial` the outcome of an earlier trial of the same configuration (same seed: same result); that
        trial's state when there was one. A configuration still running elsewhere is told FAIL (ask again)."""
        if trial.user_attrs.get("rerun_of") is not None:
            return None
        key = config_key(params)
        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        for t in self.study.get_trials(deepcopy=False, states=done):
            if t.number == trial.number or DUPLICATE_ATTR in t.user_attrs or "infeasible" in t.user_attrs \
                    or config_key(t.params) != key:
                continue
            trial.set_user_attr(DUPLICATE_ATTR, t.number)
            for name, value in t.user_attrs.items():
                if name in (COMPUTE_ATTR, "cost"):
                    trial.set_user_attr(name, value)
            if t.state == TrialState.COMPLETE:
                self.study.tell(trial, t.values)
            else:
                self.study.tell(trial, state=TrialState.PRUNED if t.state == TrialState.PRUNED else TrialState.FAIL)
            return t.state
        return None

    def report(self, s: Sampled, step: int, quality: float) -> bool:
        """Record the quality at a rung on the rung study; True when its pruner stops the trial here.

        (Not on the main study: Optuna's multi-objective TPE cannot rank pruned trials with intermediate values.)
        """
        s.last_quality = quality
        if not math.isfinite(quality):
            return False
        try:
            s.rung_trial.report(quality, step)
        except optuna.exceptions.UpdateFinishedTrialError:  # reclaimed by another driver: stop training it
            s.reclaimed = True
            return True
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
        if not s.reclaimed:
            try:
                state = self._tell(s, quality, error)
            except optuna.exceptions.UpdateFinishedTrialError:  # another driver declared it dead and re-queued it
                s.reclaimed = True
        if s.reclaimed:
            # our rung twin; the main trial is the other's
            _fail_quietly(self.storage, self._rung_ids(s.rung_trial.number))
        s.state = RECLAIMED if s.reclaimed else state.name
        return s.state

    def _tell(self, s: Sampled, quality: float | None, error: str | None) -> TrialState:
        """Tell the main study, then the rung twin; UpdateFinishedTrialError when the main trial is finished
        already (reclaimed by another driver: Optuna says so by a ValueError, or this error in a race)."""
        if error is not None:  # Ray's own error text, when its error hook ran first, is the more specific
            state, values, s.error = TrialState.FAIL, None, s.error or error
        elif s.pruned:
            state, values = TrialState.PRUNED, None
        else:
            state, values, s.last_quality = TrialState.COMPLETE, [quality, *s.compute], quality
        try:  # a COMPLETE trial's quality is a number (_finish's caller passes one with error None)
            self.study.tell(s.trial, cast("list[float] | None", values), state=state)
        except ValueError:
            if self.storage.get_trial(self._ids(s.number)).state == TrialState.RUNNING:
                raise  # not a reclaim: a value Optuna refuses
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {s.number} was reclaimed") from None
        if state == TrialState.FAIL:
            _fail_quietly(self.storage, self._rung_ids(s.rung_trial.number))
        else:
            self.rungs.tell(s.rung_trial, None if state == TrialState.PRUNED else quality, state=state)
        return state


def _ask(study: optuna.Study) -> optuna.Trial:
    """study.ask(), without Optuna's warning that heartbeats are meant for Study.optimize (the driver beats)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return study.ask()


def _interrupted(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials queued again as a re-run (their driver stopped before they finished)."""
    return {t.user_attrs["rerun_of"] for t in trials if t.user_attrs.get("rerun_of") is not None}


def never_trained(t: optuna.trial.FrozenTrial) -> bool:
    """A trial with no store row, never trained: answered as a duplicate, or withdrawn past the study's total."""
    return DUPLICATE_ATTR in t.user_attrs or WITHDRAWN_ATTR in t.user_attrs


def _uncounted(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that never counts against n_trials: rejected by constraints, or never trained."""
    return "infeasible" in t.user_attrs or never_trained(t)


def _n_done(trials: list[optuna.trial.FrozenTrial]) -> int:
    """How many of `trials` count against n_trials: finished, not interrupted, not uncounted."""
    interrupted = _interrupted(trials)
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in trials if t.state in finished and t.number not in interrupted and not _uncounted(t))


def _fail_quietly(storage: RDBStorage | InMemoryStorage, trial_id: int) -> None:
    """Set a trial FAIL unless it already finished."""
    try:
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _now_local() -> "dt.datetime":
    """Now, naive, in the clock Optuna stamps datetime_start with (local time)."""
    return dt.datetime.now()
