"""Initial nas_* tables: study, trial, report.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nas_study",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("search_space", sa.JSON, nullable=False),
        sa.Column("space_hash", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("code_version", sa.String(255), nullable=False),
    )
    op.create_table(
        "nas_trial",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("nas_study.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("arch", sa.JSON, nullable=False),
        sa.Column("target_arch", sa.JSON),
        sa.Column("objectives", sa.JSON),
        sa.Column("cost", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("rerun_of", sa.Integer),
        sa.Column("started", sa.DateTime, nullable=False),
        sa.Column("finished", sa.DateTime),
        sa.Column("duration_s", sa.Float),
        sa.UniqueConstraint("study_id", "number", name="uq_nas_trial_study_number"),
    )
    op.create_table(
        "nas_report",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("nas_trial.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.UniqueConstraint("trial_id", "step", name="uq_nas_report_trial_step"),
    )


def downgrade() -> None:
    op.drop_table("nas_report")
    op.drop_table("nas_trial")
    op.drop_table("nas_study")
