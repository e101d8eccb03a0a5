"""The chain listings run on SQLite too (the README's demo): SQLite refuses a UNION nested in
parentheses inside another, which the listing of an organisation's chains used to build."""

from __future__ import annotations

from sqlalchemy import create_engine, select

import casemgmt.models  # noqa: F401 - every table on the metadata
from casemgmt.chains.models import Chain
from casemgmt.database import Base
from casemgmt.involvement.scope import involved_chain_ids, listed_chain_ids


def test_chain_listings_run_on_sqlite():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with engine.connect() as conn:
        for ids in (listed_chain_ids(1), involved_chain_ids(1)):
            assert conn.execute(select(Chain.id).where(Chain.id.in_(ids))).all() == []
    engine.dispose()
