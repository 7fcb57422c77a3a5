"""Alembic migrations of the nas_* tables (run by nas.store.upgrade_schema)."""
