"""Configuration errors at start are one clear line each (exit 2), never a traceback."""

from __future__ import annotations

import base64
import os

import pytest
from test_handover_escalation import free_port

from casemgmt.cli import main
from casemgmt.auth.tokens import ensure_dev_keys
from casemgmt.config import Settings, get_settings


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("CASEMGMT_DEV_KEY_DIR", str(tmp_path / "keys"))
    ensure_dev_keys(Settings(dev_key_dir=tmp_path / "keys"))  # its notice is not an error line
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_a_setting_that_does_not_parse(env, capsys):
    env.setenv("CASEMGMT_LOG_FORMAT", "xml")
    assert main(["serve"]) == 2
    assert one_line(capsys).startswith("casemgmt: configuration error: CASEMGMT_LOG_FORMAT:")


def test_an_unreachable_database(env, capsys, tmp_path):
    # --workers 2 sets up a metrics directory in the environment: keep it out of the other tests.
    (tmp_path / "metrics").mkdir()
    env.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    env.setenv("CASEMGMT_DATABASE_URL", f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/casemgmt")
    assert main(["serve", "--workers", "2"]) == 2
    line = one_line(capsys)
    assert "cannot reach the database" in line and "refused" in line.lower()


def test_an_unreachable_identity_provider(env, capsys):
    env.setenv("CASEMGMT_OIDC_ISSUER", f"http://127.0.0.1:{free_port()}/realms/kommune")
    assert main(["serve"]) == 2
    assert "OpenID Connect discovery" in one_line(capsys)
