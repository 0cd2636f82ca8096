"""Alembic environment: always run with a connection handed in by `sidecar.store.database`."""

from alembic import context

from sidecar.store import tables

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=tables.SQLModel.metadata)
with context.begin_transaction():
    context.run_migrations()
