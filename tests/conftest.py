"""Test-wide settings: one torch thread, deterministic seeds, subprocesses import this checkout's `nas`."""

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
REPO = str(Path(__file__).resolve().parents[1])
# a CLI test's subprocess must run this tree's code, also when the installed (editable) package is another checkout
os.environ["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])
# the proxy seed-noise cache (nas.evaluation.noise): the tests' own, not the checkout's trials_db/noise/
# (subprocesses too)
os.environ["NAS_NOISE_DIR"] = tempfile.mkdtemp(prefix="nas-test-noise-")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


PG_ADMIN = os.environ.get("NAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server (dropped afterwards).

    Skipped when no server answers, unless NAS_TEST_POSTGRES=require (CI), where that is a failure.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"nas_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except (OperationalError, ImportError) as err:
        admin.dispose()
        message = f"PostgreSQL at {PG_ADMIN} is not reachable: {str(err).splitlines()[0]}"
        if os.environ.get("NAS_TEST_POSTGRES") == "require":
            pytest.fail(message + " (NAS_TEST_POSTGRES=require)")
        pytest.skip(message)
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's database on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nas.db'}"
    return request.getfixturevalue("pg_url")
