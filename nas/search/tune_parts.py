"""Ray Tune side of the search: a Searcher over the Optuna bridge, a pruning scheduler and the store callback.

They share one DriverState that lives in the driver process only. Ray pickles its tune/run configs into an
experiment snapshot (never restored here: the store is the record), so these objects pickle a key, not it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO, cast

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from sqlalchemy.exc import IntegrityError

from nas.search.bridge import INTERRUPTED, RECLAIMED, OptunaBridge, Sampled, SpaceExhausted
from nas.study.store import Store

_DRIVERS: dict[str, "DriverState"] = {}
WORKER_RETRIES = 1  # a trial whose worker process dies (not one that raises) runs once more before it is FAIL


@dataclass
class DriverState:
    """Live objects of one search run: Optuna bridge, store, Ray trial id -> sampled config, progress counts."""

    bridge: OptunaBridge
    store: Store
    study: str
    seed: int
    threads: int
    out: TextIO | None
    trials: dict[str, Sampled] = field(default_factory=dict)
    last_step: dict[str, int] = field(default_factory=dict)  # Ray trial id -> last rung step recorded
    replayed: dict[str, int] = field(default_factory=dict)  # a retried trial -> last step its dead attempt recorded
    counts: Counter = field(default_factory=lambda: Counter({"COMPLETE": 0, "PRUNED": 0, "FAIL": 0,
                                                             "infeasible": 0}))
    n_trials: int = 0  # the study's total, across every driver working on it
    margin: float = 0.0  # the front's tie margin on quality (nas.study.view.quality_margin of the study)
    t0: float = field(default_factory=time.perf_counter)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    _waiting_since: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        _DRIVERS[self.key] = self
        interval = self.bridge.heartbeat_interval
        if interval is not None:
            threading.Thread(target=self._heartbeats, args=(interval,), daemon=True, name="nas-heartbeat").start()

    def _heartbeats(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.bridge.beat([s for s in list(self.trials.values()) if s.state == "RUNNING"])

    def close(self) -> None:
        """Stop the heartbeat and forget this run's live objects."""
        self._stop.set()
        _DRIVERS.pop(self.key, None)

    def next_step(self) -> str:
        """"ask" a new trial, "wait" (the study's total is running elsewhere or here) or "done".

        Reclaims trials whose driver died first, so their configurations are re-run here. While waiting, the
        study is looked at once a second at most.
        """
        now = time.perf_counter()
        if self._waiting_since is not None and now - self._waiting_since < 1.0:
            return "wait"
        self.bridge.reclaim(lambda number: interrupt_row(self, number))
        done, running = self.bridge.n_done(), self.bridge.n_running()
        if done >= self.n_trials:
            self._waiting_since = None
            return "done"
        if done + running < self.n_trials:
            self._waiting_since = None
            return "ask"
        self._waiting_since = now
        return "wait"

    def replay(self, trial_id: str, step: int) -> bool:
        """True for a rung that a retried trial's dead attempt already recorded (kept: the retry has the same seed)."""
        return step <= self.replayed.get(trial_id, -1)


class _Bound:
    """Holds a DriverState by key so that Ray's snapshot pickling skips the live objects."""

    def _bind(self, state: DriverState) -> None:
        self.key, self.d = state.key, state

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "d"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.d = cast(DriverState, _DRIVERS.get(state["key"]))  # None only in a process that never calls it


class BridgeSearcher(_Bound, Searcher):
    """Ray Tune Searcher that asks the Optuna study (define-by-run over the search space) and tells it outcomes."""

    def __init__(self, state: DriverState) -> None:
        super().__init__()
        self._bind(state)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]  # Ray's annotation omits Searcher.FINISHED, a str it documents
        step = self.d.next_step()
        if step != "ask":
            return Searcher.FINISHED if step == "done" else None
        try:
            s = self.d.bridge.ask(record_infeasible(self.d), n_trials=self.d.n_trials)
        except SpaceExhausted as err:
            if self.d.out is not None:
                print(f"search ends: {err}", file=self.d.out, flush=True)
            return Searcher.FINISHED
        if s is None:  # not now: the study's last trial was asked elsewhere, or the grid's rest is running
            return None
        self.d.trials[trial_id] = s
        return {"number": s.number, "knobs": s.knobs, "arch": s.arch, "seed": self.d.seed, "threads": self.d.threads}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Where the outcome is decided: tell Optuna, write the store row, print the progress line."""
        s = self.d.trials[trial_id]
        state = self.d.bridge.finish(s, result, "the trial's worker raised or died (see the Ray error)" if error
                                     else None)
        write_outcome(self.d, s)
        progress(self.d, s, state, s.error)


class PruningScheduler(_Bound, FIFOScheduler):
    """FIFO scheduling that stops a trial when the Optuna pruner says so at a rung."""

    def __init__(self, state: DriverState) -> None:
        super().__init__()
        self._bind(state)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if "error" in result or result.get("final") or "quality" not in result or \
                self.d.replay(trial.trial_id, int(result["step"])):
            return TrialScheduler.CONTINUE
        s = self.d.trials[trial.trial_id]
        if s.reclaimed:  # another driver holds this trial: stop training it here
            return TrialScheduler.STOP
        stop = self.d.bridge.report(s, int(result["step"]), float(result["quality"]))
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE


class StoreCallback(_Bound, Callback):
    """Writes every trial start, rung report and outcome to the store (one transaction each); prints progress."""

    def __init__(self, state: DriverState) -> None:
        self._bind(state)

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        if trial.trial_id in self.d.replayed:  # a retry: its row exists
            return
        start_row(self.d, self.d.trials[trial.trial_id])

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any) -> None:
        if "quality" not in result or self.d.replay(trial.trial_id, int(result["step"])):
            return
        s = self.d.trials[trial.trial_id]
        if s.reclaimed:  # the row is another driver's
            return
        metrics = {"quality": result["quality"], **result.get("metrics", {})}
        self.d.store.add_report(self.d.study, s.number, int(result["step"]), int(result["tokens"]), metrics)
        self.d.last_step[trial.trial_id] = int(result["step"])

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        """A trial whose worker died runs again (WORKER_RETRIES): the same Optuna trial and row, the same seed."""
        self.d.replayed[trial.trial_id] = self.d.last_step.get(trial.trial_id, -1)
        if self.d.out is not None:
            s = self.d.trials[trial.trial_id]
            print(f"[{time.perf_counter() - self.d.t0:7.1f}s] trial {s.number:3d} RETRY    its worker died "
                  f"({_last_line(trial.get_error() or 'no error text')[:120]!r}); running it again",
                  file=self.d.out, flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        """Ray's error text for a worker that raised or died: kept for the row, whichever hook Ray calls first."""
        s = self.d.trials[trial.trial_id]
        s.error = _last_line(trial.get_error() or "the trial's worker died")  # the Searcher's tell keeps it
        if s.state != "RUNNING":  # the outcome is already written: give its row the text
            write_outcome(self.d, s)


def _last_line(text: str | BaseException) -> str:
    """The last non-empty line of an error text (Ray's own: a traceback, the exception last)."""
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else str(text)


def start_row(d: DriverState, s: Sampled) -> None:
    """The trial's store row, RUNNING (once)."""
    if s.started or s.reclaimed:
        return
    try:
        d.store.start_trial(d.study, s.number, s.params, s.arch.to_dict() if s.arch else {}, target_arch=s.target_arch,
                            cost=s.cost,
                            rerun_of=s.rerun_of)
    except IntegrityError:  # another driver popped the same queued Optuna trial (SQLite has no row locks)
        s.reclaimed = True
        return
    s.started = True


def write_outcome(d: DriverState, s: Sampled) -> None:
    """The trial's store row from its decided outcome (an update: writing it again is harmless)."""
    if s.state == RECLAIMED:  # the reclaiming driver marks the row interrupted, unless ours came after its look
        if s.started:
            d.store.mark_interrupted(d.study, INTERRUPTED, [s.number])
        return
    start_row(d, s)  # a trial whose worker died before Ray started it has no row yet
    objectives = d.bridge.objectives(s.compute, s.last_quality if s.state == "COMPLETE" else None)
    d.store.finish_trial(d.study, s.number, s.state, objectives=objectives, error=s.error)


def interrupt_row(d: DriverState, number: int) -> None:
    """A reclaimed trial's store row (when its driver got to write one) becomes FAIL, interrupted."""
    d.store.mark_interrupted(d.study, INTERRUPTED, [number])
    if d.out is not None:
        print(f"[{time.perf_counter() - d.t0:7.1f}s] trial {number:3d} its driver stopped: re-running its "
              "configuration", file=d.out, flush=True)


def record_infeasible(d: DriverState):
    """Store a configuration rejected by a hard constraint as PRUNED with the reason (it is never trained)."""
    def record(s: Sampled, reason: str) -> None:
        start_row(d, s)
        d.store.finish_trial(d.study, s.number, "PRUNED", objectives=d.bridge.objectives(s.compute),
                             error=f"infeasible: {reason}")
        d.counts["infeasible"] += 1
    return record


def progress(d: DriverState, s: Sampled, state: str, error: str | None) -> None:
    """Count an outcome and print one progress line."""
    d.counts[state] += 1
    if d.out is None:
        return
    c = d.counts
    detail = f"quality={s.last_quality:.4f} " if s.last_quality is not None and state != "FAIL" else ""
    if error:
        detail += f"error={error[:120]!r} "
    compute = " ".join(f"{k}={v:.3f}" for k, v in zip(d.bridge.compute_keys, s.compute))
    print(f"[{time.perf_counter() - d.t0:7.1f}s] trial {s.number:3d} {state:8s} {detail}"
          f"{compute} | done {c['COMPLETE'] + c['PRUNED'] + c['FAIL']} "
          f"(complete {c['COMPLETE']}, pruned {c['PRUNED']}, failed {c['FAIL']}), "
          f"front {len(d.bridge.front(d.margin))}",
          file=d.out, flush=True)
