"""The screens on SQLite, the README's demo database: a refusal is audited in a transaction of its
own, and SQLite takes its write lock at every BEGIN, so the request's own transaction must end
first (it once made every refused page wait five seconds and answer 503)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from casemgmt.database import make_sessionmaker


@pytest.fixture
def sqlite_web(sqlite_app):
    client, _, _, engine = sqlite_app
    return client, engine


def test_a_refused_screen_answers_at_once_and_is_audited_on_sqlite(sqlite_web):
    from web_helpers import demo_sign_in

    from casemgmt.privacy.models import AuditEvent

    client, engine = sqlite_web
    demo_sign_in(client, "admin.ennetal")
    started = time.monotonic()
    for path in ("/ui/faelle", "/ui/posteingang", "/ui/ketten/00000000-0000-4000-8000-000000000000"):
        resp = client.get(path)
        assert resp.status_code == 403, (path, resp.status_code)
        assert "Nicht erlaubt" in resp.text and "Ihre Rolle erlaubt diese Aktion nicht." in resp.text
    assert time.monotonic() - started < 4, "a refusal waited for the request's own write lock"
    with make_sessionmaker(engine)() as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.outcome == "denied")).all()
    assert len(refused) >= 3
