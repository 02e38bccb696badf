"""Alembic environment: run on the connection handed over by ``study.store.migrate``."""

from alembic import context

from study.store.schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
