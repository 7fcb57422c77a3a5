"""nas_study.adequacy (the proxy adequacy check of a new study) and nas_fidelity.reference (the reference proxy).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nas_study") as batch:
        batch.add_column(sa.Column("adequacy", sa.JSON))
    with op.batch_alter_table("nas_fidelity") as batch:
        batch.add_column(sa.Column("reference", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("nas_fidelity") as batch:
        batch.drop_column("reference")
    with op.batch_alter_table("nas_study") as batch:
        batch.drop_column("adequacy")
