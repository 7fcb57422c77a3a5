"""nas.search.optuna_compat: what `nas` relies on in Optuna, checked against Optuna itself, so that an upgrade that
changes any of it fails here, by name, instead of silently in a search."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from nas.search import optuna_compat
from nas.search.bridge import AskTellGridSampler
from nas.search.optuna_compat import (
    FIXED_PARAMS_ATTR,
    GRID_ID_ATTR,
    StaleTrials,
    TrialIds,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["rdb", "memory"])
def storage(request, tmp_path):
    if request.param == "memory":
        return optuna.storages.InMemoryStorage()
    return optuna_compat.rdb_storage(f"sqlite:///{tmp_path / 'o.db'}", {}, None, None)


def test_trial_ids_come_from_public_storage_calls_and_match_optunas_own(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="ids")
    other = optuna.create_study(storage=storage, study_name="other")  # ids are per storage, numbers per study
    trials = [other.ask(), study.ask(), other.ask(), study.ask()]
    ids, other_ids = TrialIds(storage, "ids"), TrialIds(storage, "other")
    for t in trials:
        found = (ids if t.study.study_name == "ids" else other_ids)(t.number)
        assert storage.get_trial(found).number == t.number
        assert found == t._trial_id  # oracle: Optuna's private id, which nas no longer reads
    assert ids(0) != other_ids(0)


def test_enqueue_trial_records_its_parameters_in_the_fixed_params_system_attr(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="queue")
    study.enqueue_trial({"x": 3, "kind": "a"})
    queued, sampled = study.ask(), study.ask()
    ids = TrialIds(storage, "queue")
    assert storage.get_trial_system_attrs(ids(queued.number))[FIXED_PARAMS_ATTR] == {"x": 3, "kind": "a"}
    assert optuna_compat.enqueued_params(storage, ids(queued.number)) == {"x": 3, "kind": "a"}
    assert optuna_compat.enqueued_params(storage, ids(sampled.number)) is None
    assert not optuna_compat.drew_grid_point(storage, ids(queued.number))


def test_the_grid_sampler_marks_its_draws_and_counts_a_failed_point_visited(storage) -> None:
    """What the bridge's withdraw relies on: a drawn grid point is marked `grid_id`; once its trial finishes, even
    FAIL, the sampler never proposes that point again (so a withdrawn point must be queued again)."""
    study = optuna.create_study(storage=storage, study_name="grid",
                                sampler=AskTellGridSampler({"x": [0, 1]}, seed=0))  # Optuna's, minus its Study.stop
    ids = TrialIds(storage, "grid")
    first = study.ask()
    x0 = first.suggest_categorical("x", [0, 1])
    assert GRID_ID_ATTR in storage.get_trial_system_attrs(ids(first.number))
    assert optuna_compat.drew_grid_point(storage, ids(first.number))
    assert optuna_compat.enqueued_params(storage, ids(first.number)) is None
    study.tell(first, state=TrialState.FAIL)
    assert not study.sampler.is_exhausted(study)
    second = study.ask()
    assert second.suggest_categorical("x", [0, 1]) == 1 - x0  # the failed point is not proposed again
    study.tell(second, 0.0)
    assert study.sampler.is_exhausted(study)
    study.enqueue_trial({"x": x0})  # queued: not a draw
    queued = study.ask()
    assert not optuna_compat.drew_grid_point(storage, ids(queued.number))
    assert optuna_compat.enqueued_params(storage, ids(queued.number)) == {"x": x0}


def test_stale_trials_are_failed_and_collected_through_the_public_callback(tmp_path) -> None:
    storage = optuna_compat.rdb_storage(f"sqlite:///{tmp_path / 'h.db'}", {}, heartbeat_interval=1, grace_period=1)
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), StaleTrials)
    study = optuna.create_study(storage=storage, study_name="beat")
    ids = TrialIds(storage, "beat")
    stale, live = study.ask(), study.ask()
    storage.record_heartbeat(ids(stale.number))
    assert optuna_compat.fail_stale_trials(study, storage) == []  # beaten just now
    time.sleep(2.5)
    storage.record_heartbeat(ids(live.number))
    failed = optuna_compat.fail_stale_trials(study, storage)
    assert [t.number for t in failed] == [stale.number] and failed[0].state == TrialState.FAIL
    assert storage.get_trial(ids(live.number)).state == TrialState.RUNNING
    assert optuna_compat.fail_stale_trials(study, storage) == []  # failed once, collected once


def test_a_storage_made_elsewhere_is_refused_by_name(tmp_path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'x.db'}")
    study = optuna.create_study(storage=storage, study_name="x")
    with pytest.raises(TypeError, match="not made by nas.search.optuna_compat.rdb_storage"):
        optuna_compat.fail_stale_trials(study, storage)
