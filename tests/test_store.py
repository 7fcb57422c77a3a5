"""The SQL store: Alembic-versioned nas_* tables beside Optuna's, round trips, states and interruption."""

from __future__ import annotations

import sqlite3

import optuna
import pytest

from nas.store import VERSION_TABLE, Store


@pytest.fixture()
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'db' / 'nas.db'}"


def test_migrations_create_versioned_tables_beside_optuna(url, tmp_path):
    (tmp_path / "db").mkdir()
    optuna.create_study(storage=url, study_name="s")  # Optuna's own alembic_version must not clash with ours
    Store(url).close()
    Store(url).close()  # re-opening an up-to-date database is a no-op
    con = sqlite3.connect(tmp_path / "db" / "nas.db")
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert {"nas_study", "nas_trial", "nas_report", "nas_export", "nas_fidelity", VERSION_TABLE, "alembic_version",
            "studies", "trials"} <= tables
    assert con.execute(f"select version_num from {VERSION_TABLE}").fetchall() == [("0002",)]
    assert optuna.load_study(study_name="s", storage=url).study_name == "s"


def test_round_trip_of_study_trials_and_reports(url):
    store = Store(url)
    made = store.create_study("st", {"n_trials": 3}, {"name": "sp"}, "abc")
    assert store.study("st") == made and store.study("nope") is None
    assert made.code_version  # git describe or the package version
    store.start_trial("st", 0, {"window": 16}, {"d_model": 64}, target_arch={"d_model": 2048},
                      cost={"flops_ratio": 0.5})
    store.add_report("st", 0, 10, 1000, {"quality": 3.0})
    store.add_report("st", 0, 20, 2000, {"quality": 2.5})
    store.finish_trial("st", 0, "COMPLETE", objectives={"quality": 2.5, "flops_ratio": 0.5})
    store.start_trial("st", 1, {"window": 32}, {"d_model": 64})
    store.close()

    again = Store(url)  # everything committed survives a new connection
    t0, t1 = again.trials("st")
    assert (t0.number, t0.state, t0.params, t0.target_arch, t0.cost) == (
        0, "COMPLETE", {"window": 16}, {"d_model": 2048}, {"flops_ratio": 0.5})
    assert [(r.step, r.tokens, r.metrics["quality"]) for r in t0.reports] == [(10, 1000, 3.0), (20, 2000, 2.5)]
    assert t0.objectives == {"quality": 2.5, "flops_ratio": 0.5}
    assert t0.finished is not None and t0.duration_s >= 0
    assert t1.state == "RUNNING" and t1.finished is None
    assert [t.number for t in again.trials("st", states=("RUNNING",))] == [1]


def test_interrupted_trials_become_fail_with_the_reason(url):
    store = Store(url)
    store.create_study("st", {}, {}, "h")
    for n in range(3):
        store.start_trial("st", n, {}, {})
    store.finish_trial("st", 0, "PRUNED")
    assert store.mark_interrupted("st", "interrupted: test") == [1, 2]
    states = [(t.state, t.error) for t in store.trials("st")]
    assert states == [("PRUNED", None), ("FAIL", "interrupted: test"), ("FAIL", "interrupted: test")]


def test_bad_writes_name_what_is_wrong(url):
    store = Store(url)
    store.create_study("st", {}, {}, "h")
    with pytest.raises(ValueError, match="study='other' not found"):
        store.start_trial("other", 0, {}, {})
    with pytest.raises(ValueError, match="trial number=5 not found"):
        store.add_report("st", 5, 1, 1, {})
    store.start_trial("st", 0, {}, {})
    with pytest.raises(ValueError, match="state='DONE' is invalid"):
        store.finish_trial("st", 0, "DONE")
