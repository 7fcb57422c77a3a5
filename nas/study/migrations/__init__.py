"""Alembic migrations of the nas_* tables (run by nas.study.store.upgrade_schema)."""
