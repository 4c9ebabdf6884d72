"""Demo rows for the expand-contract flow: `users` rows in the old shape (email only).

    python examples/alembic-demo/seed.py --rows 5000     # DSN from $DEMO_DATABASE_URL

Run it after `alembic upgrade 0001_users` (or expand@head: rows written by old code then have no new_email,
which is what the backfill copies). Idempotent: ids already there are skipped.
"""

from __future__ import annotations

import argparse
import os

from sqlalchemy import Engine, create_engine, text

INSERT = "INSERT INTO users (id, name, email) VALUES (:id, :name, :email)"


def seed(engine: Engine, rows: int, *, start: int = 1) -> int:
    """Insert users `start`..`start + rows - 1` that are not there yet; how many were inserted."""
    with engine.begin() as conn:
        have = {int(i) for (i,) in conn.execute(text("SELECT id FROM users"))}
        batch = [
            {"id": i, "name": f"user {i}", "email": f"user{i}@example.test"}
            for i in range(start, start + rows)
            if i not in have
        ]
        if batch:
            conn.execute(text(INSERT), batch)
    return len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--start", type=int, default=1)
    args = parser.parse_args()
    url = os.environ["DEMO_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    print(f"inserted {seed(engine, args.rows, start=args.start)} row(s)")
    engine.dispose()


if __name__ == "__main__":
    main()
