"""Alembic environment for the nas_* tables; run programmatically by nas.study.store.upgrade_schema."""

from __future__ import annotations

from alembic import context

from nas.study.store import VERSION_TABLE, Base, make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, version_table=VERSION_TABLE,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      version_table=VERSION_TABLE, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif "connection" in config.attributes:
    _run(config.attributes["connection"])
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "nas.study.store sets sqlalchemy.url on the Alembic config"
    with make_engine(url).connect() as conn:
        _run(conn)
