"""The SQL store: studies, trials and their learning-curve reports (SQLAlchemy 2.0, Alembic-versioned)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    Select,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    make_url,
    select,
    update,
)
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, defer, mapped_column, relationship, sessionmaker

from nas.profiles import REPO_ROOT

DEFAULT_URL = f"sqlite:///{REPO_ROOT / 'trials_db' / 'nas.db'}"
VERSION_TABLE = "nas_alembic_version"  # Optuna's own tables use `alembic_version` in the same database
STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAIL")


def now() -> dt.datetime:
    """Now, in UTC, without tzinfo (as the store keeps times)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the nas_* tables."""


class StudyRow(Base):
    """One search: its name, composed config, search space and the code that ran it."""

    __tablename__ = "nas_study"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    config: Mapped[dict] = mapped_column(JSON, nullable=False)
    search_space: Mapped[dict] = mapped_column(JSON, nullable=False)
    space_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)
    code_version: Mapped[str] = mapped_column(String(255), nullable=False)
    adequacy: Mapped[dict | None] = mapped_column(JSON)  # the proxy adequacy check at creation (revision 0003)
    trials: Mapped[list["TrialRow"]] = relationship(back_populates="study", order_by="TrialRow.number")


class TrialRow(Base):
    """One trial: sampled knobs, the architectures they give, objectives, costs, outcome and timings."""

    __tablename__ = "nas_trial"
    __table_args__ = (UniqueConstraint("study_id", "number", name="uq_nas_trial_study_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("nas_study.id", ondelete="CASCADE"), nullable=False, index=True)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    params: Mapped[dict] = mapped_column(JSON, nullable=False)
    arch: Mapped[dict] = mapped_column(JSON, nullable=False)  # proxy ArchConfig.to_dict()
    target_arch: Mapped[dict | None] = mapped_column(JSON)  # target-scale ArchConfig.to_dict()
    objectives: Mapped[dict | None] = mapped_column(JSON)  # objective name -> value
    cost: Mapped[dict | None] = mapped_column(JSON)  # CostReport.to_dict()
    error: Mapped[str | None] = mapped_column(Text)
    rerun_of: Mapped[int | None] = mapped_column(Integer)
    started: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    study: Mapped[StudyRow] = relationship(back_populates="trials")
    reports: Mapped[list["ReportRow"]] = relationship(back_populates="trial", order_by="ReportRow.step")


class ReportRow(Base):
    """One intermediate evaluation of a trial (a rung of its learning curve)."""

    __tablename__ = "nas_report"
    __table_args__ = (UniqueConstraint("trial_id", "step", name="uq_nas_report_trial_step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("nas_trial.id", ondelete="CASCADE"), nullable=False, index=True)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    metrics: Mapped[dict] = mapped_column(JSON, nullable=False)
    trial: Mapped[TrialRow] = relationship(back_populates="reports")


class ExportRow(Base):
    """One export: the trial a policy chose and the config file written for it."""

    __tablename__ = "nas_export"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("nas_study.id", ondelete="CASCADE"), nullable=False, index=True)
    trial_number: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    policy: Mapped[dict] = mapped_column(JSON, nullable=False)  # {"policy": ..., its bound}
    objectives: Mapped[dict] = mapped_column(JSON, nullable=False)
    code_version: Mapped[str] = mapped_column(String(255), nullable=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)


class FidelityRow(Base):
    """One fidelity check: proxy quality against quality at a reference proxy, for the top trials of a front."""

    __tablename__ = "nas_fidelity"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("nas_study.id", ondelete="CASCADE"), nullable=False, index=True)
    trials: Mapped[list] = mapped_column(JSON, nullable=False)  # trial numbers, in proxy-ranking order
    proxy_quality: Mapped[list] = mapped_column(JSON, nullable=False)
    long_quality: Mapped[list] = mapped_column(JSON, nullable=False)  # at the reference proxy
    budget_factor: Mapped[float] = mapped_column(Float, nullable=False)  # reference tokens / the study's
    budget_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    kendall_tau: Mapped[float | None] = mapped_column(Float)  # None when undefined (every quality tied)
    code_version: Mapped[str] = mapped_column(String(255), nullable=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)
    reference: Mapped[dict | None] = mapped_column(JSON)  # the reference ProxySpec (revision 0003; None before)


@dataclass(frozen=True)
class Fidelity:
    """A detached fidelity row."""

    trials: list[int]
    proxy_quality: list[float]
    long_quality: list[float]
    budget_factor: float
    budget_tokens: int
    kendall_tau: float | None
    code_version: str
    created: dt.datetime
    reference: dict[str, Any] | None = None  # the reference proxy it retrained at; None: older checks (same size)


@dataclass(frozen=True)
class Report:
    """A detached report row."""

    step: int
    tokens: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Trial:
    """A detached trial row with its reports."""

    number: int
    state: str
    params: dict[str, Any]
    arch: dict[str, Any]
    target_arch: dict[str, Any] | None
    objectives: dict[str, float] | None
    cost: dict[str, Any] | None
    error: str | None
    rerun_of: int | None
    started: dt.datetime
    finished: dt.datetime | None
    duration_s: float | None
    reports: tuple[Report, ...]


@dataclass(frozen=True)
class Study:
    """A detached study row."""

    name: str
    config: dict[str, Any]
    search_space: dict[str, Any]
    space_hash: str
    created: dt.datetime
    code_version: str
    adequacy: dict[str, Any] | None = None  # {"mode", "passed", "summary", "fix", "checks"}; None before 0003


def code_version() -> str:
    """`git describe` of the repository when available, else the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True,
        )
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"nas {version('nas')}"
    except PackageNotFoundError:
        return "nas (unknown version)"


class StoreError(ValueError):
    """The store cannot be opened: a bad URL, a missing driver, an unreachable server, a file that is no database."""


URL_FORM = ("dialect[+driver]://user[:password]@host[:port]/database, e.g. sqlite:///PATH.db or "
            "postgresql+psycopg://USER@HOST/DB")
_PASSWORD = re.compile(r"(://[^/@:]*:)[^@/]*@")  # user:password@ in a string SQLAlchemy cannot parse


def shown_url(url: str) -> str:
    """`url` as it may be printed or stored: its password masked (SQLAlchemy's hide_password)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return _PASSWORD.sub(r"\1***@", url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as err:
        raise StoreError(f"store.url={shown_url(url)!r} is not a SQLAlchemy URL: expected {URL_FORM}") from err


SQLITE_BUSY_TIMEOUT_S = 60  # a writer waits this long for another driver's write lock
SERVER_CONNECT_TIMEOUT_S = 10  # a PostgreSQL server that has not answered a connection by then is not there


def engine_kwargs(url: str | URL) -> dict[str, Any]:
    """create_engine arguments for every engine on `url` (the store's and Optuna's): SQLite waits for a busy
    database; a server's pooled connections are pinged before use, and PostgreSQL gives up on a connection that
    gets no answer (libpq waits forever by default; a `connect_timeout` in the URL wins)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": SERVER_CONNECT_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def _engine(url: str) -> Engine:
    """create_engine with engine_kwargs, its failures as StoreError (unknown dialect, driver not installed);
    connects to nothing."""
    parsed = _parse(url)
    try:
        return create_engine(parsed, **engine_kwargs(parsed))
    except NoSuchModuleError as err:
        raise StoreError(f"store.url={shown_url(url)} names an unknown dialect or driver "
                         f"{parsed.drivername!r}: expected {URL_FORM}") from err
    except ImportError as err:
        hint = "pip install -e '.[postgres]'" if parsed.get_backend_name() == "postgresql" else \
            f"pip install {err.name or parsed.drivername}"
        raise StoreError(f"store.url={shown_url(url)} needs the database driver {err.name or parsed.drivername!r}, "
                         f"which is not installed: {hint}") from err


def _unopenable(url: str, err: SQLAlchemyError) -> StoreError:
    """A failed connection or first read, as one line naming the (masked) URL."""
    first = (str(getattr(err, "orig", None) or err).strip().splitlines() or [type(err).__name__])[0]
    path = sqlite_file(url)
    if path is not None:
        return StoreError(f"store.url={shown_url(url)} cannot be opened: {path} is not a usable SQLite database "
                          f"({first}): expected a store written by nas.search, or a path for a new one")
    return StoreError(f"store.url={shown_url(url)} cannot be opened ({first}): expected a reachable database "
                      "server, an existing database on it and a user it accepts")


@contextmanager
def folder_lock(folder: Path, timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on `folder` while inside; other processes opening a store there
    wait, up to `timeout_s` (then StoreError). Where there is no flock (Windows) or the filesystem refuses it
    (some network mounts), nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"{folder} has been locked by another process opening a store there for "
                                     f"{timeout_s:g} s: expected it to finish or be stopped") from None
                time.sleep(0.02)
            except OSError:
                break  # no flock on this filesystem
        yield
    finally:
        os.close(fd)  # releases the lock


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the ones this call made, outermost first (not those another
    process made meanwhile)."""
    made = []
    for p in reversed([p for p in (folder, *folder.parents) if not p.exists()]):
        try:
            p.mkdir()
        except FileExistsError:
            continue
        made.append(p)
    return made


@contextmanager
def _opening(url: str) -> Iterator[None]:
    """Translate SQLAlchemy errors while opening into StoreError.

    A SQLite store is opened holding its folder's lock, so drivers that start at once on a new file create it
    (journal mode, tables) one after the other; on failure, the file (and folders) this opener created go again.
    """
    path = sqlite_file(url)
    made: list[Path] = []
    try:
        if path is None:
            yield
            return
        made = _make_folders(path.parent)
        with folder_lock(path.parent):
            new = not path.exists()  # under the lock: no other opener is creating it now
            try:
                yield
            except (SQLAlchemyError, OSError, StoreError):
                leftovers = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
                for leftover in leftovers if new else ():
                    if leftover.is_file():
                        leftover.unlink()
                raise
    except (SQLAlchemyError, OSError, StoreError) as err:
        for folder in reversed(made):  # innermost first; one another opener has filled meanwhile stays
            try:
                folder.rmdir()
            except OSError:
                pass
        if isinstance(err, StoreError):
            raise
        if isinstance(err, OSError):
            raise StoreError(f"store.url={shown_url(url)} cannot be created: {err.strerror or err}: expected a "
                             "writable folder") from err
        raise _unopenable(url, err) from err


def check_store(url: str) -> None:
    """Raise StoreError unless `url` names a database this machine can open; creates and writes nothing.

    A SQLite file that does not exist yet passes (the store creates it); one that exists must be a database.
    """
    path = sqlite_file(_parse(url))
    if path is not None and not path.exists():
        folder = next(p for p in path.absolute().parents if p.exists())
        if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise StoreError(f"store.url={shown_url(url)} cannot be created: {folder} is not a writable folder")
        return
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            inspect(conn).get_table_names()  # reads the schema: a SQLite header, a server's catalog
    except SQLAlchemyError as err:
        raise _unopenable(url, err) from err
    finally:
        engine.dispose()


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for `url`; SQLite files get their folder created and a busy timeout. StoreError if bad."""
    path = sqlite_file(_parse(url))
    if path is None:
        return _engine(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = _engine(url)
    tune_sqlite(engine)
    return engine


def tune_sqlite(engine: Engine) -> None:
    """Per connection: foreign keys on, WAL journal with synchronous=NORMAL.

    WAL lets readers (dashboards) work while the driver writes, and makes a commit ~0.05 ms instead of
    ~20 ms of fsync; a killed process loses nothing committed (only a power cut can drop the last commits).
    """
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    engine.dispose()  # connections opened before this hook get the pragmas when reopened


def upgrade_schema(engine: Engine, revision: str = "head", attempts: int = 3) -> None:
    """Bring the nas_* tables to an Alembic revision shipped in nas/study/migrations (default: the newest).

    Two drivers opening a new database at once both try to create the tables; the loser's transaction fails
    and is retried, when it finds them made.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


class Store:
    """Reads and writes studies, trials and reports; every write is its own transaction."""

    def __init__(self, url: str = DEFAULT_URL, *, migrate: bool = True) -> None:
        """Open the store (StoreError, one line, when it cannot be); migrate=False reads an existing one as it is."""
        self.url = url
        path = sqlite_file(_parse(url))
        if not migrate and path is not None and not path.is_file():
            raise StoreError(f"store.url={shown_url(url)} is unreachable: no such SQLite file (run python -m "
                             "nas.search first or set store.url)")
        with _opening(url):
            self.engine = make_engine(url)
            try:
                with self.engine.connect() as conn:
                    inspect(conn).get_table_names()  # fails here, not at the first query, when it is no database
                if migrate:
                    upgrade_schema(self.engine)
            except BaseException:
                self.engine.dispose()  # no pooled connection keeps the file it removes open
                raise
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._columns: dict[str, set[str]] = {}

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def has_column(self, table: str, column: str) -> bool:
        """Whether the database has table.column (a store opened read-only may predate a revision)."""
        if table not in self._columns:
            found = inspect(self.engine)
            self._columns[table] = {c["name"] for c in found.get_columns(table)} if found.has_table(table) else set()
        return column in self._columns[table]

    def _select_studies(self) -> Select:
        """select(StudyRow), leaving out the adequacy column when the schema predates it (revision 0003)."""
        q = select(StudyRow)
        return q if self.has_column("nas_study", "adequacy") else q.options(defer(StudyRow.adequacy, raiseload=True))

    # ---- studies -----------------------------------------------------------------------
    def study(self, name: str) -> Study | None:
        """The study called `name`, or None."""
        with self._session() as s:
            row = s.scalar(self._select_studies().where(StudyRow.name == name))
            return None if row is None else _study(row)

    def studies(self) -> list[Study]:
        """Every study, oldest first."""
        with self._session() as s:
            return [_study(r) for r in s.scalars(self._select_studies().order_by(StudyRow.created))]

    def create_study(self, name: str, config: dict, search_space: dict, space_hash: str, *,
                     adequacy: dict | None = None) -> Study | None:
        """Insert a new study row (with its proxy adequacy check, when one ran); None when a study of that name
        exists already (another process may have created it a moment ago)."""
        try:
            with self._session.begin() as s:
                row = StudyRow(name=name, config=config, search_space=search_space, space_hash=space_hash,
                               code_version=code_version(), adequacy=adequacy)
                s.add(row)
                s.flush()
                return _study(row)
        except IntegrityError:
            return None

    # ---- trials ------------------------------------------------------------------------
    def start_trial(self, study: str, number: int, params: dict, arch: dict, *, target_arch: dict | None = None,
                    cost: dict | None = None, rerun_of: int | None = None) -> None:
        """Record a trial as RUNNING."""
        with self._session.begin() as s:
            s.add(TrialRow(study_id=self._study_id(s, study), number=number, state="RUNNING", params=params,
                           arch=arch, target_arch=target_arch, cost=cost, rerun_of=rerun_of))

    def add_report(self, study: str, number: int, step: int, tokens: int, metrics: dict) -> None:
        """Append one intermediate report to a trial."""
        with self._session.begin() as s:
            trial_id = self._row_id(s, study, number)
            s.add(ReportRow(trial_id=trial_id, step=int(step), tokens=int(tokens), metrics=metrics))

    def finish_trial(self, study: str, number: int, state: str, *, objectives: dict | None = None,
                     error: str | None = None) -> None:
        """Set a trial's final state (COMPLETE, PRUNED or FAIL), objectives, error text and timings."""
        if state not in STATES[1:]:
            raise ValueError(f"trial state={state!r} is invalid: expected one of {', '.join(STATES[1:])}")
        with self._session.begin() as s:
            row = s.get(TrialRow, self._row_id(s, study, number))
            assert row is not None, "_row_id found it"
            row.state, row.objectives, row.error = state, objectives, error
            row.finished = now()
            row.duration_s = (row.finished - row.started).total_seconds()

    def mark_interrupted(self, study: str, reason: str, numbers: list[int] | None = None) -> list[int]:
        """Mark the study's RUNNING trials (those of `numbers` only, when given) as FAIL with `reason`; returns
        the numbers marked."""
        with self._session.begin() as s:
            sid = self._study_id(s, study)
            which = [TrialRow.study_id == sid, TrialRow.state == "RUNNING"]
            if numbers is not None:
                which.append(TrialRow.number.in_(numbers))
            marked = list(s.scalars(select(TrialRow.number).where(*which)))
            s.execute(update(TrialRow).where(*which).values(state="FAIL", error=reason, finished=now()))
            return marked

    def trials(self, study: str, states: tuple[str, ...] | None = None) -> list[Trial]:
        """The study's trials (optionally only those in `states`) with their reports, by number."""
        with self._session() as s:
            q = select(TrialRow).where(TrialRow.study_id == self._study_id(s, study)).order_by(TrialRow.number)
            if states is not None:
                q = q.where(TrialRow.state.in_(states))
            return [_trial(r) for r in s.scalars(q)]

    # ---- what follows a search: exports and fidelity checks ------------------------------
    def record_export(self, study: str, trial_number: int, name: str, path: str, policy: dict[str, Any],
                      objectives: dict[str, float]) -> None:
        """Insert an export row."""
        with self._session.begin() as s:
            s.add(ExportRow(study_id=self._study_id(s, study), trial_number=trial_number, name=name, path=path,
                            policy=policy, objectives=objectives, code_version=code_version()))

    def exports(self, study: str) -> list[dict[str, Any]]:
        """The study's exports, oldest first, as plain dicts (reads only; none before the first export)."""
        if not inspect(self.engine).has_table(ExportRow.__tablename__):
            return []
        with self._session() as s:
            rows = s.scalars(select(ExportRow).where(ExportRow.study_id == self._study_id(s, study))
                             .order_by(ExportRow.id))
            return [{"trial": r.trial_number, "name": r.name, "path": r.path, "policy": r.policy,
                     "objectives": r.objectives, "code_version": r.code_version, "created": r.created} for r in rows]

    def record_fidelity(self, study: str, result: Fidelity) -> None:
        """Insert a fidelity row."""
        with self._session.begin() as s:
            s.add(FidelityRow(study_id=self._study_id(s, study), trials=result.trials,
                              proxy_quality=result.proxy_quality, long_quality=result.long_quality,
                              budget_factor=result.budget_factor, budget_tokens=result.budget_tokens,
                              kendall_tau=result.kendall_tau, code_version=result.code_version,
                              created=result.created, reference=result.reference))

    def fidelity_results(self, study: str) -> list[Fidelity]:
        """The study's fidelity checks, oldest first (what its dashboard page shows when present); reads only."""
        if not inspect(self.engine).has_table(FidelityRow.__tablename__):
            return []
        has_reference = self.has_column(FidelityRow.__tablename__, "reference")  # read-only stores may predate 0003
        with self._session() as s:
            q = select(FidelityRow).where(FidelityRow.study_id == self._study_id(s, study)).order_by(FidelityRow.id)
            rows = s.scalars(q if has_reference else q.options(defer(FidelityRow.reference, raiseload=True)))
            return [Fidelity(r.trials, r.proxy_quality, r.long_quality, r.budget_factor, r.budget_tokens,
                             r.kendall_tau, r.code_version, r.created, r.reference if has_reference else None)
                    for r in rows]

    # ---- helpers -----------------------------------------------------------------------
    @staticmethod
    def _study_id(s: Session, name: str) -> int:
        sid = s.scalar(select(StudyRow.id).where(StudyRow.name == name))
        if sid is None:
            raise ValueError(f"study={name!r} not found in the store")
        return sid

    def _row_id(self, s: Session, study: str, number: int) -> int:
        tid = s.scalar(select(TrialRow.id).where(TrialRow.study_id == self._study_id(s, study),
                                                 TrialRow.number == number))
        if tid is None:
            raise ValueError(f"trial number={number} not found in study {study!r}")
        return tid


def _study(r: StudyRow) -> Study:
    adequacy = None if "adequacy" in inspect(r).unloaded else r.adequacy
    return Study(r.name, r.config, r.search_space, r.space_hash, r.created, r.code_version, adequacy)


def _trial(r: TrialRow) -> Trial:
    reports = tuple(Report(p.step, p.tokens, p.metrics) for p in r.reports)
    return Trial(r.number, r.state, r.params, r.arch, r.target_arch, r.objectives, r.cost, r.error, r.rerun_of,
                 r.started, r.finished, r.duration_s, reports)
