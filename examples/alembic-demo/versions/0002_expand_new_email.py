"""Expand (the guide's phase 1): add the new column beside the old one, nullable, so the code already running
(which knows only `email`) keeps working and the dual-read code can start reading `new_email`.

Revision ID: 0002_expand_new_email
Branch: expand (`alembic upgrade expand@head`)
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_expand_new_email"
down_revision = "0001_users"
branch_labels = ("expand",)
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("new_email", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "new_email")
