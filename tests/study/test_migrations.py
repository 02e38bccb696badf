"""The migrations create exactly the tables study.schema describes."""

import sqlalchemy as sa

from study import store
from study.schema import metadata


def test_migrated_database_matches_the_schema_module(db_url):
    engine = store.connect(db_url)
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        live = {c["name"] for c in inspector.get_columns(table.name)}
        assert live == {c.name for c in table.columns}, table.name
        primary_key = set(inspector.get_pk_constraint(table.name)["constrained_columns"])
        assert primary_key == {c.name for c in table.primary_key.columns}, table.name
