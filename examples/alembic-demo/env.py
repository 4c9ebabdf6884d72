"""Alembic's environment for the demo schema (`users.email` -> `new_email`, the guide's migration example).

Online, it runs on the connection the caller hands over in `config.attributes["connection"]` (rollbook's
tasks/schema_migrations.py does: one transaction it commits or rolls back as a whole), else it connects to
`sqlalchemy.url`. Offline (`alembic upgrade --sql`) it only prints the SQL for the URL's dialect.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config


def offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


def online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        context.configure(connection=given, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    offline()
else:
    online()
