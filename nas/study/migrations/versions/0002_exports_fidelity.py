"""nas_export and nas_fidelity: what `python -m nas.export` chose and its proxy-fidelity checks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _study_fk() -> sa.Column:
    return sa.Column("study_id", sa.Integer, sa.ForeignKey("nas_study.id", ondelete="CASCADE"), nullable=False,
                     index=True)


def upgrade() -> None:
    op.create_table(
        "nas_export",
        sa.Column("id", sa.Integer, primary_key=True),
        _study_fk(),
        sa.Column("trial_number", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("objectives", sa.JSON, nullable=False),
        sa.Column("code_version", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "nas_fidelity",
        sa.Column("id", sa.Integer, primary_key=True),
        _study_fk(),
        sa.Column("trials", sa.JSON, nullable=False),
        sa.Column("proxy_quality", sa.JSON, nullable=False),
        sa.Column("long_quality", sa.JSON, nullable=False),
        sa.Column("budget_factor", sa.Float, nullable=False),
        sa.Column("budget_tokens", sa.Integer, nullable=False),
        sa.Column("kendall_tau", sa.Float),
        sa.Column("code_version", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nas_fidelity")
    op.drop_table("nas_export")
