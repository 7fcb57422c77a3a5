"""Alembic revisions of the nas_* tables."""
