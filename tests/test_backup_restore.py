"""The README's backup and restore procedure ("Betrieb"), run: pg_dump of a seeded database,
pg_restore into a new one, `casemgmt audit verify` passes on the copy and the service serves the
restored data (with the same master key: without it the copy is unreadable)."""

from __future__ import annotations

import base64
import subprocess
import uuid

from conftest import MASTER_KEY, create_database, drop_database
from http_helpers import ok
from sqlalchemy.engine import make_url
from test_api import new_person, started
from test_handovers_api import KI, SOZ


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_dump_restore_verify_and_serve(client, auth, world, pg_url, service_role, settings, policies,
                                       clock, tmp_path, monkeypatch, capsys):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Sicherung",
                        given_names="Ada", birth_date="1991-02-03")
    chain = started(client, ki, person)
    ok(client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions", json={"action": "start"},
                   headers=auth(*SOZ)))

    dump = tmp_path / "casemgmt.dump"
    subprocess.run(["pg_dump", "--format=custom", "--file", str(dump), libpq(pg_url)], check=True)
    name = f"casemgmt_restore_{uuid.uuid4().hex[:8]}"
    restored = create_database(name)
    try:
        subprocess.run(["pg_restore", "--exit-on-error", "--no-owner", "--dbname", libpq(restored), str(dump)],
                       check=True)
        restored_service = make_url(restored).set(username=service_role).render_as_string(hide_password=False)

        from casemgmt.cli import main
        from casemgmt.config import get_settings

        monkeypatch.setenv("CASEMGMT_DATABASE_URL", restored_service)
        monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(MASTER_KEY).decode())
        get_settings.cache_clear()
        try:
            assert main(["audit", "verify", "--workers", "1"]) == 0
        finally:
            get_settings.cache_clear()
        assert "audit trail intact" in capsys.readouterr().out

        from fastapi.testclient import TestClient

        from casemgmt.app import create_app
        from casemgmt.database import make_engine

        engine = make_engine(restored_service, pool_size=2)
        app = create_app(settings.model_copy(update={"database_url": restored_service}), engine=engine,
                         policies=policies, clock=clock, master_key=MASTER_KEY)
        try:
            with TestClient(app, raise_server_exceptions=False) as copy:
                read = ok(copy.get(f"/persons/{person['id']}", headers=ki))
                assert read["fields"]["family_name"] == "Sicherung"
                served = ok(copy.get(f"/chains/{chain['id']}", headers=ki))
                assert served["version"] == chain["version"] + 1
        finally:
            engine.dispose()
    finally:
        drop_database(name)
