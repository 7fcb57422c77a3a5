"""The SQL store: Alembic-versioned nas_* tables beside Optuna's, round trips, states, interruption, bad URLs."""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
import time

import optuna
import pytest
from sqlalchemy.exc import OperationalError

from nas.study import store as store_module
from nas.study.store import (
    VERSION_TABLE,
    Base,
    Store,
    StoreError,
    check_store,
    folder_lock,
    make_engine,
    shown_url,
    upgrade_schema,
)


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
    assert con.execute(f"select version_num from {VERSION_TABLE}").fetchall() == [("0003",)]
    assert optuna.load_study(study_name="s", storage=url).study_name == "s"


def test_round_trip_of_study_trials_and_reports(store_url):
    url = store_url
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


def test_interrupted_trials_become_fail_with_the_reason(store_url):
    store = Store(store_url)
    store.create_study("st", {}, {}, "h")
    for n in range(3):
        store.start_trial("st", n, {}, {})
    store.finish_trial("st", 0, "PRUNED")
    store.start_trial("st", 3, {}, {})
    assert store.mark_interrupted("st", "interrupted: test", [2, 0]) == [2]  # only RUNNING ones of those asked
    assert store.mark_interrupted("st", "interrupted: test") == [1, 3]
    states = [(t.state, t.error) for t in store.trials("st")]
    assert states == [("PRUNED", None)] + [("FAIL", "interrupted: test")] * 3
    store.close()


def test_creating_a_study_twice_at_once_keeps_one_and_raises_nothing(store_url):
    from concurrent.futures import ThreadPoolExecutor

    stores = [Store(store_url) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:  # four drivers creating the same study at the same moment
        made = list(pool.map(lambda s: s.create_study("race", {"n": 1}, {}, "h"), stores))
    assert sum(m is not None for m in made) == 1
    assert [s.name for s in stores[0].studies()] == ["race"]
    for s in stores:
        s.close()


def test_bad_writes_name_what_is_wrong(store_url):
    store = Store(store_url)
    store.create_study("st", {}, {}, "h")
    with pytest.raises(ValueError, match="study='other' not found"):
        store.start_trial("other", 0, {}, {})
    with pytest.raises(ValueError, match="trial number=5 not found"):
        store.add_report("st", 5, 1, 1, {})
    store.start_trial("st", 0, {}, {})
    with pytest.raises(ValueError, match="state='DONE' is invalid"):
        store.finish_trial("st", 0, "DONE")


def test_revision_0003_upgrades_a_0002_database_keeping_its_rows(url, tmp_path):
    from nas.study.store import Fidelity

    (tmp_path / "db").mkdir()
    engine = make_engine(url)
    upgrade_schema(engine, "0002")
    with engine.begin() as conn:  # a study and a fidelity check as the 0002 code wrote them
        conn.exec_driver_sql("insert into nas_study (name, config, search_space, space_hash, created, code_version) "
                             "values ('old', '{\"objectives\": {\"compute\": \"flops_ratio\"}}', '{}', 'h', "
                             "'2026-01-01 00:00:00', 'v0')")
        conn.exec_driver_sql("insert into nas_fidelity (study_id, trials, proxy_quality, long_quality, budget_factor, "
                             "budget_tokens, kendall_tau, code_version, created) values (1, '[0, 1]', '[1.0, 2.0]', "
                             "'[0.9, 1.8]', 4.0, 1024, 1.0, 'v0', '2026-01-02 00:00:00')")
    engine.dispose()
    store = Store(url)  # upgrades to head
    con = sqlite3.connect(tmp_path / "db" / "nas.db")
    assert con.execute(f"select version_num from {VERSION_TABLE}").fetchall() == [("0003",)]
    old = store.study("old")
    assert old.config == {"objectives": {"compute": "flops_ratio"}} and old.adequacy is None
    assert [(f.trials, f.kendall_tau, f.reference) for f in store.fidelity_results("old")] == [([0, 1], 1.0, None)]
    made = store.create_study("new", {}, {}, "h", adequacy={"mode": "warn", "passed": False})
    assert made.adequacy == store.study("new").adequacy == {"mode": "warn", "passed": False}
    check = Fidelity([0, 1], [1.0, 2.0], [0.5, 0.7], 8.0, 4096, 1.0, "v1", old.created, {"name": "tiny-ref"})
    store.record_fidelity("new", check)
    assert store.fidelity_results("new")[0].reference == {"name": "tiny-ref"}
    store.close()


def test_migrations_cover_the_models_metadata(url, tmp_path):
    """Alembic's own comparison: the migrated schema has every nas_* table and column the models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    Store(url).close()
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]
    assert diff == []


# ---- opening: bad URLs and files are one-line StoreErrors that create nothing; passwords never shown ----------------

PASSWORD = "s3cr3t-pw"


def _one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(err.value)
    assert "\n" not in message and PASSWORD not in message
    for part in parts:
        assert part in message
    return message


@pytest.mark.parametrize("bad, says", [
    ("notaurl", "store.url='notaurl' is not a SQLAlchemy URL: expected dialect[+driver]://"),
    (f"nosuchdialect://u:{PASSWORD}@h/db", "store.url=nosuchdialect://u:***@h/db names an unknown dialect"),
    (f"mysql+nosuchdriver://u:{PASSWORD}@h/db", "names an unknown dialect or driver 'mysql+nosuchdriver'"),
    (f"mysql+pymysql://u:{PASSWORD}@h/db", "store.url=mysql+pymysql://u:***@h/db needs the database driver "
                                           "'pymysql', which is not installed: pip install pymysql"),
])
def test_a_bad_url_is_one_line_naming_it_with_the_password_masked(tmp_path, monkeypatch, bad, says):
    monkeypatch.chdir(tmp_path)
    for opening in (check_store, Store):
        with pytest.raises(StoreError) as err:
            opening(bad)
        _one_line(err, says)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_one_line(tmp_path):
    import importlib.util

    server = f"postgresql+psycopg://nas:{PASSWORD}@127.0.0.1:9/nas"  # the discard port: nothing listens
    says = ("cannot be opened (connection failed" if importlib.util.find_spec("psycopg")
            else "needs the database driver 'psycopg', which is not installed: pip install -e '.[postgres]'")
    for opening in (check_store, Store):
        with pytest.raises(StoreError) as err:
            opening(server)
        _one_line(err, "store.url=postgresql+psycopg://nas:***@127.0.0.1:9/nas", says)


def test_a_server_that_never_answers_times_out_in_one_line(monkeypatch):
    pytest.importorskip("psycopg")
    from nas.search.bridge import make_storage

    monkeypatch.setattr(store_module, "SERVER_CONNECT_TIMEOUT_S", 2)
    with socket.socket() as silent:  # the kernel completes the handshake; nothing ever reads or replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql+psycopg://nas@127.0.0.1:{silent.getsockname()[1]}/nas"
        for opening in (check_store, Store, lambda u: make_storage(u, attempts=1)):
            t0 = time.perf_counter()
            with pytest.raises((StoreError, OperationalError)) as err:
                opening(url)
            assert time.perf_counter() - t0 < 20  # libpq alone waits for ever
            assert "timeout" in str(err.value).lower()


def test_a_file_of_random_bytes_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "random.db"
    data = bytes(random.Random(0).getrandbits(8) for _ in range(8192))
    path.write_bytes(data)
    for opening in (check_store, Store, lambda url: Store(url, migrate=False)):
        with pytest.raises(StoreError) as err:
            opening(f"sqlite:///{path}")
        _one_line(err, f"{path} is not a usable SQLite database (file is not a database)")
    assert path.read_bytes() == data and sorted(p.name for p in tmp_path.iterdir()) == ["random.db"]


def test_a_store_that_fails_while_being_created_leaves_no_file_or_folder(tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    import nas.study.store

    def broken(engine, revision="head"):
        with engine.connect():  # the file exists now
            pass
        raise OperationalError("ALTER TABLE", {}, Exception("disk I/O error"))

    monkeypatch.setattr(nas.study.store, "upgrade_schema", broken)
    url = f"sqlite:///{tmp_path / 'new' / 'deeper' / 'nas.db'}"
    with pytest.raises(StoreError) as err:
        Store(url)
    _one_line(err, "(disk I/O error)")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("")  # a folder that cannot be made: a file is in the way
    for opening in (check_store, Store):
        with pytest.raises(StoreError) as err:
            opening(f"sqlite:///{tmp_path / 'afile' / 'nas.db'}")
        _one_line(err, "cannot be created")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_a_new_sqlite_store_is_created_by_one_opener_at_a_time(tmp_path):
    """Drivers starting at once on a new file raced to switch it to WAL (SQLITE_BUSY, disk I/O error), and a
    loser removed the file the winner had made. An opener waits while another holds the folder's lock."""
    path = tmp_path / "nas.db"
    opened: list[Store] = []
    with folder_lock(tmp_path):  # another opener, mid-creation
        opener = threading.Thread(target=lambda: opened.append(Store(f"sqlite:///{path}")))
        opener.start()
        opener.join(timeout=1.0)
        assert opener.is_alive() and not path.exists()
        with pytest.raises(StoreError, match=rf"{tmp_path} has been locked by another process opening a store "
                                             r"there for 0.2 s"), folder_lock(tmp_path, timeout_s=0.2):
            pass  # a third opener gives up in time
    opener.join(timeout=60)
    assert not opener.is_alive() and opened
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    opened[0].close()


def test_an_opener_that_fails_leaves_the_file_another_opener_created_while_it_waited(tmp_path, monkeypatch):
    import nas.study.store

    def broken(engine, revision="head"):
        raise OperationalError("CREATE TABLE", {}, Exception("database is locked"))

    monkeypatch.setattr(nas.study.store, "upgrade_schema", broken)
    path = tmp_path / "nas.db"
    failed: list[BaseException] = []

    def open_failing() -> None:
        try:
            Store(f"sqlite:///{path}")
        except StoreError as err:
            failed.append(err)

    with folder_lock(tmp_path):
        opener = threading.Thread(target=open_failing)
        opener.start()
        opener.join(timeout=1.0)
        with sqlite3.connect(path) as conn:  # the other opener creates the file meanwhile
            conn.execute("CREATE TABLE made_by_the_other (x)")
        conn.close()
    opener.join(timeout=60)
    assert failed and path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("made_by_the_other",)]
    conn.close()


def test_reading_a_missing_file_and_checking_a_new_one_create_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'nas.db'}"
    check_store(url)  # a new store may be created there
    with pytest.raises(StoreError) as err:
        Store(url, migrate=False)
    _one_line(err, "is unreachable: no such SQLite file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", [f"postgresql+psycopg://nas:{PASSWORD}@db.example:5432/nas?sslmode=require",
                                 f"postgresql://nas:{PASSWORD.replace('-', '%2D')}@h/nas",
                                 f"postgres ql://nas:{PASSWORD}@h/nas"])  # unparsable: masked all the same
def test_shown_url_masks_the_password_and_keeps_the_rest(url):
    from sqlalchemy import make_url

    shown = shown_url(url)
    assert PASSWORD not in shown and PASSWORD.replace("-", "%2D") not in shown and "nas:***@" in shown
    if " " not in url:  # SQLAlchemy reads back everything but the password
        back, original = make_url(shown), make_url(url)
        assert (back.drivername, back.username, back.host, back.port, back.database, dict(back.query)) == \
            (original.drivername, original.username, original.host, original.port, original.database,
             dict(original.query))
    assert shown_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
