"""Contract (the guide's phase 3): once every row is backfilled and only code reading `new_email` runs, drop
`email` and make `new_email` the required column. Applied only after the expand branch (depends_on), and on
PostgreSQL in one transaction with its version row: a row still NULL in `new_email` makes SET NOT NULL fail, and
the DROP COLUMN before it is rolled back with it.

There is no way back from here (the old column's data is gone): downgrade() refuses.

Revision ID: 0003_contract_drop_email
Branch: contract (`alembic upgrade contract@head`)
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_contract_drop_email"
down_revision = "0001_users"
branch_labels = ("contract",)
depends_on = ("0002_expand_new_email",)

# the table as it stands before this revision, so batch mode (SQLite rebuilds the table) also works offline
USERS = sa.Table(
    "users",
    sa.MetaData(),
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("new_email", sa.String(255), nullable=True),
)


def upgrade() -> None:
    with op.batch_alter_table("users", copy_from=USERS) as batch:
        batch.drop_column("email")
        batch.alter_column("new_email", existing_type=sa.String(255), nullable=False)


def downgrade() -> None:
    raise RuntimeError("0003_contract_drop_email dropped users.email: it cannot be undone, restore from a backup")
