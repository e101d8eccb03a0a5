"""The command line: broken policies stop start-up with file and line; tokens verify."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from casemgmt.auth.tokens import TokenVerifier
from casemgmt.cli import main
from casemgmt.config import Settings, get_settings

POLICIES = Path(__file__).resolve().parent.parent / "policies"


@pytest.fixture
def policy_copy(tmp_path, monkeypatch):
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    monkeypatch.setenv("CASEMGMT_POLICY_DIR", str(target))
    monkeypatch.setenv("CASEMGMT_DEV_KEY_DIR", str(tmp_path / "keys"))
    get_settings.cache_clear()
    yield target
    get_settings.cache_clear()


def test_check_policies_accepts_the_shipped_files(policy_copy, capsys):
    assert main(["check-policies"]) == 0
    assert "5 chain templates" in capsys.readouterr().out


def test_unknown_owner_in_a_template_names_file_line_and_field(policy_copy, capsys):
    path = policy_copy / "chains" / "uma.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip().startswith("owner:"))
    lines[index] = lines[index].split("owner:")[0] + "owner: jugendamtt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["check-policies"]) == 2
    err = capsys.readouterr().err
    assert f"uma.yaml:{index + 1}:" in err
    assert "steps[0].owner" in err and "jugendamtt" in err


def test_role_granting_an_unknown_permission_is_refused(policy_copy, capsys):
    path = policy_copy / "roles.yaml"
    text = path.read_text(encoding="utf-8").replace(
        "permissions: [reference.read, proposals.read, proposals.decide, reports.read, export.read]\n  dpo:",
        "permissions: [reference.read, reports.rewrite]\n  dpo:")
    path.write_text(text, encoding="utf-8")
    assert main(["check-policies"]) == 2
    err = capsys.readouterr().err
    assert "roles.yaml:" in err and "roles.steering.permissions[1]" in err


def test_yaml_syntax_error_names_the_line(policy_copy, capsys):
    path = policy_copy / "organisation_kinds.yaml"
    path.write_text("kinds:\n  - key: a\n    title: [unclosed\n", encoding="utf-8")
    assert main(["check-policies"]) == 2
    err = capsys.readouterr().err
    assert "organisation_kinds.yaml:" in err and "invalid YAML" in err


def test_token_command_mints_a_token_the_service_accepts(policy_copy, capsys):
    assert main(["token", "--user", "cm.1", "--org", "ennetal_ki", "--roles", "case_manager"]) == 0
    token = capsys.readouterr().out.strip()
    claims = TokenVerifier(get_settings()).verify(token)
    assert (claims.user_id, claims.organisation_key, claims.roles) == ("cm.1", "ennetal_ki", ("case_manager",))
    assert (Path(get_settings().dev_key_dir) / "private.pem").stat().st_mode & 0o077 == 0


def test_openapi_check_detects_drift(tmp_path, capsys):
    out = tmp_path / "openapi.json"
    assert main(["openapi", "--output", str(out)]) == 0
    assert main(["openapi", "--output", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace('"casemgmt"', '"renamed"', 1))
    assert main(["openapi", "--output", str(out), "--check"]) == 1


def test_serve_refuses_an_unmigrated_database(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("CASEMGMT_DEV_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    get_settings.cache_clear()
    from fastapi.testclient import TestClient

    from casemgmt.app import create_app
    from casemgmt.migrations import DatabaseNotMigrated

    with pytest.raises(DatabaseNotMigrated, match="casemgmt migrate"):
        with TestClient(create_app(Settings())):
            pass
    get_settings.cache_clear()


def test_serve_refuses_to_start_without_a_master_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    monkeypatch.setenv("CASEMGMT_DEV_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("CASEMGMT_MASTER_KEY_FILE", str(tmp_path / "missing.key"))
    get_settings.cache_clear()
    from fastapi.testclient import TestClient

    from casemgmt.app import create_app
    from casemgmt.privacy.crypto import MasterKeyError

    with pytest.raises(MasterKeyError, match="missing.key"):
        with TestClient(create_app(Settings())):
            pass
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(b"short").decode())
    with pytest.raises(MasterKeyError, match="32 bytes"):
        with TestClient(create_app(Settings())):
            pass
    get_settings.cache_clear()


# Every command the operator can type, with the smallest arguments it takes, and the exit codes it
# may give on a freshly migrated SQLite database (2: refused as not applicable there). A command
# whose code no longer fits its own wiring (a helper's changed signature) fails here, not in
# production; a new command fails until it is listed.
EVERY_COMMAND = {
    "check-policies": ([], {0}),
    "migrate": ([], {0}),
    "db grant": (["--service-role", "casemgmt_app"], {2}),  # roles exist only on PostgreSQL
    "audit keygen": (["--out", "{tmp}/checkpoint.key"], {0}),
    "audit checkpoint": (["--dir", "{tmp}/checkpoints"], {0}),
    "audit verify": (["--checkpoints", "{tmp}/checkpoints"], {0}),
    "escalate": ([], {0}),  # releases every due quarter (releases.automatic), so then ...
    "report release": ([], {0}),  # ... nothing is left to release
    "notify": ([], {0}),
    "retention run": (["--dry-run"], {0}),
    "retention run ": ([], {0}),
    "erasure replay": (["--dry-run", "--dir", "{tmp}/checkpoints"], {0}),
    "keys status": ([], {0}),
    "keys rotate": ([], {0}),
    "chains migrate": (["--template", "uma", "--to", "1", "--dry-run"], {2}),  # every template is at 1
    "openapi": (["--check", "--output", str(Path(__file__).resolve().parent.parent / "openapi" / "openapi.json")], {0}),
    "token": (["--user", "cm.1", "--org", "ennetal_ki", "--roles", "case_manager"], {0}),
    # Covered with a server of their own in tests/test_db_roles.py, test_processes.py, test_demo.py:
    "serve": None, "demo": None,
}


def _leaf_commands(parser) -> set[str]:
    import argparse

    leaves = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                below = _leaf_commands(sub)
                leaves |= {f"{name} {b}" for b in below} if below else {name}
    return leaves


def test_every_command_runs_once_on_a_fresh_database(tmp_path, monkeypatch, capsys):
    from casemgmt.cli import build_parser

    assert _leaf_commands(build_parser()) == {name.strip() for name in EVERY_COMMAND}
    for name in list(os.environ):
        if name.startswith("CASEMGMT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", f"sqlite:///{tmp_path / 'casemgmt.db'}")
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_KEY_FILE", str(tmp_path / "checkpoint.key"))
    monkeypatch.setenv("CASEMGMT_DEV_KEY_DIR", str(tmp_path / "keys"))
    # A Kreis to release reports for (the commands below run on it; migrate again is a no-op).
    get_settings.cache_clear()
    assert main(["migrate"]) == 0
    from casemgmt.database import make_engine, make_sessionmaker
    from casemgmt.demo.world import build_world

    engine = make_engine(os.environ["CASEMGMT_DATABASE_URL"])
    with make_sessionmaker(engine)() as session:
        build_world(session)
    engine.dispose()
    seen: dict[str, str] = {}
    for command, spec in EVERY_COMMAND.items():
        if spec is None:
            continue
        argv, codes = spec
        get_settings.cache_clear()
        try:
            code = main([*command.split(), *(a.replace("{tmp}", str(tmp_path)) for a in argv)])
        finally:
            get_settings.cache_clear()
        out = capsys.readouterr()
        assert code in codes, f"casemgmt {command}: exit {code}\n{out.out[-2000:]}\n{out.err[-2000:]}"
        assert "Traceback" not in out.err, command
        seen[command] = out.out
    assert "released 2025-Q1 for jurisdiction" in seen["escalate"] and "nothing due" in seen["report release"]
