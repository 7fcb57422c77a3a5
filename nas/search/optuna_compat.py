"""Every use `nas` makes of Optuna beyond its documented API, in one place (tests/test_optuna_compat.py
fails loudly when an Optuna upgrade changes any of it).

Public API where one exists:
- a trial's storage id: `storage.get_study_id_from_name` + `storage.get_trial_id_from_study_id_trial_number`
  (public BaseStorage methods) instead of the private `Trial._trial_id` / `FrozenTrial._trial_id`;
- the trials a heartbeat check failed: RDBStorage's `heartbeat_stale_trial_callback` constructor argument (a
  collector, `StaleTrials`), read by `optuna.storages.fail_stale_trials`, instead of reassigning the attribute.
None exists for (Optuna's own conventions, undocumented):
- the parameters `Study.enqueue_trial` queued a trial with: its system attr `fixed_params`;
- whether the grid sampler drew a trial's point: its system attr `grid_id` (the sampler counts a finished
  trial's point as visited).
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

FIXED_PARAMS_ATTR = "fixed_params"  # system attr: the parameters Study.enqueue_trial queued the trial with
GRID_ID_ATTR = "grid_id"  # system attr: the index of the grid point GridSampler drew for the trial


class TrialIds:
    """Storage ids of one study's trials by trial number, through public storage calls (cached: ids never change)."""

    def __init__(self, storage: BaseStorage, study_name: str) -> None:
        self.storage, self.study_name = storage, study_name
        self._study_id: int | None = None
        self._ids: dict[int, int] = {}

    def __call__(self, number: int) -> int:
        """The storage id of trial `number`."""
        if number not in self._ids:
            if self._study_id is None:
                self._study_id = self.storage.get_study_id_from_name(self.study_name)
            self._ids[number] = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
        return self._ids[number]


def enqueued_params(storage: BaseStorage, trial_id: int) -> dict[str, Any] | None:
    """The parameters a trial was queued with (Study.enqueue_trial); None when it was sampled."""
    return storage.get_trial_system_attrs(trial_id).get(FIXED_PARAMS_ATTR)


def drew_grid_point(storage: BaseStorage, trial_id: int) -> bool:
    """Whether the grid sampler drew this trial's point (and so counts it visited once the trial finishes)."""
    return GRID_ID_ATTR in storage.get_trial_system_attrs(trial_id)


class StaleTrials:
    """A heartbeat-stale-trial callback that collects the trials `fail_stale_trials` failed, until taken."""

    def __init__(self) -> None:
        self.failed: list[FrozenTrial] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failed.append(trial)

    def take(self) -> list[FrozenTrial]:
        """The trials collected since the last take."""
        out, self.failed = self.failed, []
        return out


def rdb_storage(url: str, engine_kwargs: dict[str, Any], heartbeat_interval: int | None,
                grace_period: int | None) -> RDBStorage:
    """Optuna's RDB storage; with a heartbeat, a `StaleTrials` collector as its stale-trial callback."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat arguments
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                          grace_period=grace_period, heartbeat_stale_trial_callback=StaleTrials())


def fail_stale_trials(study: optuna.Study, storage: RDBStorage) -> list[FrozenTrial]:
    """Fail the study's trials whose heartbeat is older than the grace period (Optuna's `fail_stale_trials`, any
    host); the trials this call failed (another driver failing one at the same moment gets it, not us).

    `storage` is the study's, made by `rdb_storage` (its callback collects the failed trials)."""
    collector = storage.get_heartbeat_stale_trial_callback()
    if not isinstance(collector, StaleTrials):
        raise TypeError("fail_stale_trials: the storage was not made by nas.search.optuna_compat.rdb_storage (its "
                        f"stale-trial callback is {collector!r}, not a StaleTrials collector)")
    collector.take()
    with warnings.catch_warnings():  # fail_stale_trials is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return collector.take()
