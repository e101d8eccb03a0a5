"""Signed audit checkpoints outside the database, as an operator and an attacker meet them.

The attack of issue 9: with the table owner's rights one switches the append-only triggers off,
deletes the newest audit rows, moves the stream's head back and switches the triggers on again.
The shortened trail is intact in itself, so ``casemgmt audit verify`` passes; ``casemgmt audit
verify --checkpoints DIR`` must not, and neither may a forged checkpoint, a checkpoint removed
from the middle of a file, nor a checkpoint chained onto a forged one."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

import conftest
from casemgmt.demo.checkpoint import checkpoint_periodically
from casemgmt.privacy import audit
from casemgmt.privacy.audit import GENESIS, STREAMS, AuditEntry

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STREAM = 5  # the stream the attacker shortens
OTHER = 11


def entries(stream: int, n: int, start: int = 0) -> list[AuditEntry]:
    """``n`` entries that all land in ``stream`` (persons whose id is ``stream`` modulo STREAMS)."""
    return [AuditEntry(agent_user="cm.test", agent_organisation_id=1, action="R", subtype="person.read",
                       entity_type="person", person_id=uuid.UUID(int=stream + STREAMS * (start + i + 1)),
                       detail=f"Eintrag {start + i}")
            for i in range(n)]


def append(session_factory, keys, *batches: list[AuditEntry], at: datetime = T0) -> None:
    for batch in batches:
        with session_factory() as session:
            audit.append(session, keys.audit_key, batch, at)
            session.commit()


def heads(engine) -> dict[int, tuple[int, str]]:
    with engine.connect() as conn:
        return {s: (q, h) for s, q, h in conn.execute(text("SELECT stream, last_seq, last_hash FROM audit_head"))}


def cut_off(owner_db, stream: int, keep: int) -> None:
    """The attack: as the tables' owner, switch the triggers off, delete the newest rows of a
    stream, move its head back to the last row kept, switch the triggers on again."""
    with owner_db.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        conn.execute(text("ALTER TABLE audit_head DISABLE TRIGGER audit_head_forward"))
        conn.execute(text("DELETE FROM audit_events WHERE stream = :s AND seq > :k"), {"s": stream, "k": keep})
        last = conn.execute(text("SELECT hash FROM audit_events WHERE stream = :s AND seq = :k"),
                            {"s": stream, "k": keep}).scalar() or GENESIS
        conn.execute(text("UPDATE audit_head SET last_seq = :k, last_hash = :h WHERE stream = :s"),
                     {"k": keep, "h": last, "s": stream})
        conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
        conn.execute(text("ALTER TABLE audit_head ENABLE TRIGGER audit_head_forward"))


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path, service_url):
    """``cli("audit", "verify")`` -> (exit code, stdout, stderr), as the service role, with a
    checkpoint key made by ``casemgmt audit keygen``."""
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    for name in list(os.environ):
        if name.startswith("CASEMGMT_AUDIT_CHECKPOINT"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", service_url)
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(conftest.MASTER_KEY).decode())
    monkeypatch.setenv("CASEMGMT_POLICY_DIR", str(conftest.ROOT / "policies"))
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_KEY_FILE", str(tmp_path / "keys" / "checkpoint.key"))

    def run(*argv: str) -> tuple[int, str, str]:
        get_settings.cache_clear()
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    assert run("audit", "keygen")[0] == 0
    yield run
    get_settings.cache_clear()


@pytest.fixture
def directory(tmp_path) -> Path:
    return tmp_path / "worm" / "audit-checkpoints"


def lines(directory: Path) -> list[tuple[str, bytes]]:
    """(file name, line) of every checkpoint, in order."""
    return [(p.name, raw) for p in sorted(directory.glob("*.checkpoints"))
            for raw in p.read_bytes().split(b"\n")[:-1]]


def canonical(body: dict) -> bytes:
    """The signed bytes, written out independently: sorted keys, no spaces, ASCII."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def resign(body: dict, key: Ed25519PrivateKey) -> bytes:
    body = {k: v for k, v in body.items() if k != "sig"}
    return canonical(body | {"sig": base64.b64encode(key.sign(canonical(body))).decode()})


def private_key(tmp_path) -> Ed25519PrivateKey:
    return serialization.load_pem_private_key((tmp_path / "keys" / "checkpoint.key").read_bytes(), None)


# --- keys ----------------------------------------------------------------------------------------


def test_keygen_writes_a_key_only_its_owner_reads_and_never_overwrites_it(cli, tmp_path):
    key, pub = tmp_path / "keys" / "checkpoint.key", tmp_path / "keys" / "checkpoint.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert isinstance(private_key(tmp_path), Ed25519PrivateKey)
    public = serialization.load_pem_public_key(pub.read_bytes())
    assert public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == \
        private_key(tmp_path).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    before = key.read_bytes()
    code, _, err = cli("audit", "keygen")
    assert code == 2 and "refusing to overwrite" in err
    assert key.read_bytes() == before


def test_checkpoint_without_a_key_or_a_directory_exits_2(cli, tmp_path, directory, monkeypatch, db):
    code, _, err = cli("audit", "checkpoint")
    assert code == 2 and "no checkpoint directory" in err and "CASEMGMT_AUDIT_CHECKPOINT_DIR" in err
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_KEY_FILE", str(tmp_path / "missing.key"))
    code, _, err = cli("audit", "checkpoint", "--dir", str(directory))
    assert code == 2 and "missing.key" in err and "casemgmt audit keygen" in err
    assert not directory.exists() or not list(directory.iterdir())
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 2 and "missing.key" in err


# --- writing -------------------------------------------------------------------------------------


def test_a_checkpoint_holds_every_streams_head_signed_and_chained(cli, db, session_factory, keys, directory,
                                                                 tmp_path, service_url):
    append(session_factory, keys, entries(STREAM, 7), entries(OTHER, 3))
    code, out, err = cli("audit", "checkpoint", "--dir", str(directory))
    assert code == 0, err
    assert f"audit checkpoint n=1 written to {directory}" in out
    [(name, first)] = lines(directory)
    assert name == f"{datetime.now(UTC):%Y-%m-%d}.checkpoints"
    body = json.loads(first)
    assert body["n"] == 1 and body["prev"] == GENESIS
    assert body["streams"] == [[s, q, h] for s, (q, h) in sorted(heads(db).items())]
    assert body["streams"][STREAM][1] == 7 and body["streams"][OTHER][1] == 3
    assert body["database"]["backend"] == "postgresql"
    assert body["database"]["database"] == service_url.rsplit("/", 1)[1]
    assert body["database"]["system_identifier"].isdigit()
    assert abs(datetime.fromisoformat(body["at"]) - datetime.now(UTC)) < timedelta(minutes=5)
    signature = base64.b64decode(body.pop("sig"))
    private_key(tmp_path).public_key().verify(signature, canonical(body))  # raises if not

    append(session_factory, keys, entries(STREAM, 2, start=7))
    assert cli("audit", "checkpoint", "--dir", str(directory))[0] == 0
    [(_, again), (_, second)] = lines(directory)
    assert again == first  # never rewritten
    body = json.loads(second)
    assert body["n"] == 2 and body["prev"] == hashlib.sha256(first).hexdigest()
    assert body["streams"][STREAM][1] == 9
    mode = stat.S_IMODE((directory / name).stat().st_mode)
    assert mode & 0o022 == 0  # nobody else may write


def test_a_trail_that_grew_since_its_checkpoints_passes(cli, db, session_factory, keys, directory):
    append(session_factory, keys, entries(STREAM, 4))
    assert cli("audit", "checkpoint", "--dir", str(directory))[0] == 0
    append(session_factory, keys, entries(STREAM, 3, start=4), entries(OTHER, 5))
    assert cli("audit", "checkpoint", "--dir", str(directory))[0] == 0
    append(session_factory, keys, entries(STREAM, 6, start=7), entries(OTHER, 1, start=5))
    code, out, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert (code, err) == (0, "")
    assert "audit trail intact: 19 rows verified" in out
    assert f"checkpoints intact: 2 in {directory} verified" in out and "the latest is checkpoint n=2" in out


# --- the attack ------------------------------------------------------------------------------------


def test_cutting_off_the_newest_rows_passes_verify_but_not_the_checkpoints(cli, db, owner_db, session_factory,
                                                                          keys, directory):
    append(session_factory, keys, entries(STREAM, 10), entries(OTHER, 4))
    assert cli("audit", "checkpoint", "--dir", str(directory))[0] == 0
    append(session_factory, keys, entries(OTHER, 2, start=4))
    assert cli("audit", "checkpoint", "--dir", str(directory))[0] == 0
    written = lines(directory)

    cut_off(owner_db, STREAM, keep=7)

    code, out, err = cli("audit", "verify")
    assert (code, err) == (0, ""), "the attack should leave a trail that is intact in itself"
    assert "audit trail intact: 13 rows verified" in out
    code, out, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1
    assert "audit trail intact" in out  # the chains themselves are fine ...
    assert "FAILS ITS CHECKPOINTS" in err  # ... but they are shorter than signed
    assert f"checkpoint n=1 ({written[0][0]}:1, " in err and "(and 1 later)" in err
    assert f"stream {STREAM} is behind it: the database's head is at entry 7, the checkpoint saw entry 10" in err
    assert f"stream {OTHER}" not in err
    # and no new checkpoint blesses the shortened trail
    code, out, err = cli("audit", "checkpoint", "--dir", str(directory))
    assert code == 1 and "REFUSED" in err and f"stream {STREAM} is behind it" in err
    assert lines(directory) == written


def test_refilling_the_stream_after_the_cut_shows_as_divergence(cli, db, owner_db, session_factory, keys,
                                                                directory):
    """The service goes on writing after the cut, so the stream soon reaches the checkpointed
    length again, with other rows: correctly linked, but not the ones the checkpoint saw."""
    append(session_factory, keys, entries(STREAM, 10))
    assert cli("audit", "checkpoint", "--dir", str(directory))[0] == 0
    cut_off(owner_db, STREAM, keep=6)
    append(session_factory, keys, entries(STREAM, 5, start=100))
    assert cli("audit", "verify")[0] == 0
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1
    assert f"stream {STREAM} diverges from it: entry 10 has another hash than the checkpoint saw" in err


def test_a_missing_checkpointed_row_is_named(cli, db, owner_db, session_factory, keys, directory):
    append(session_factory, keys, entries(STREAM, 5))
    assert cli("audit", "checkpoint", "--dir", str(directory))[0] == 0
    append(session_factory, keys, entries(STREAM, 3, start=5))
    with owner_db.begin() as conn:  # the checkpointed row itself, head left alone
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("DELETE FROM audit_events WHERE stream = :s AND seq = 5"), {"s": STREAM})
    code, out, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1
    assert "expected entry 5 but found entry 6" in err  # the chain's own check
    assert f"stream {STREAM}: entry 5, which the checkpoint saw, is missing" in err


# --- the checkpoint files --------------------------------------------------------------------------


@pytest.fixture
def three(cli, db, session_factory, keys, directory) -> list[tuple[str, bytes]]:
    for i in range(3):
        append(session_factory, keys, entries(STREAM, 2, start=2 * i))
        assert cli("audit", "checkpoint", "--dir", str(directory))[0] == 0
    assert cli("audit", "verify", "--checkpoints", str(directory))[0] == 0
    return lines(directory)


def rewrite(directory: Path, name: str, new_lines: list[bytes]) -> None:
    """What an attacker with write access to a non-WORM directory does."""
    (directory / name).write_bytes(b"".join(line + b"\n" for line in new_lines))


def test_a_checkpoint_deleted_from_the_middle_of_a_file_is_found(cli, three, directory):
    name = three[0][0]
    rewrite(directory, name, [three[0][1], three[2][1]])
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1
    assert f"checkpoint n=3 ({name}:2, " in err and "is not the next checkpoint after checkpoint n=1" in err
    assert "n=2..2 removed" in err


def test_the_first_checkpoint_deleted_is_found(cli, three, directory):
    name = three[0][0]
    rewrite(directory, name, [three[1][1], three[2][1]])
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and "is not the next checkpoint at the start: n=1..1 removed" in err


def test_a_checkpoint_changed_to_fit_a_shortened_trail_fails_its_signature(cli, three, directory, owner_db):
    """The attacker cuts the trail and lowers the checkpoints' heads to match, keeping the
    signatures; or signs them anew with a key of their own."""
    cut_off(owner_db, STREAM, keep=2)
    name = three[0][0]
    forged = []
    for _, raw in three:
        body = json.loads(raw)
        body["streams"][STREAM] = [STREAM, min(body["streams"][STREAM][1], 2), body["streams"][STREAM][2]]
        forged.append(canonical(body))
    rewrite(directory, name, forged)
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1
    # checkpoint 1 saw entry 2 and needed no change; 2 and 3 were lowered
    assert err.count("signature does not verify: forged or altered") == 2
    assert f"checkpoint n=2 ({name}:2" in err and f"checkpoint n=3 ({name}:3" in err

    own = Ed25519PrivateKey.generate()
    rewrite(directory, name, [resign(json.loads(line), own) for line in forged])
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and "signature does not verify" in err and "signed with key id" not in err
    # the new line's own key id does not help: the configured key decides
    body = json.loads(resign(json.loads(forged[0]), own))
    body["key"] = "0123456789abcdef"
    rewrite(directory, name, [resign(body, own)])
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and "signed with key id 0123456789abcdef" in err


def test_a_forged_last_checkpoint_is_not_chained_to(cli, three, directory, db):
    name = three[0][0]
    body = json.loads(three[2][1])
    body["at"] = "2030-01-01T00:00:00.000000+00:00"
    rewrite(directory, name, [three[0][1], three[1][1], canonical(body)])
    code, _, err = cli("audit", "checkpoint", "--dir", str(directory))
    assert code == 1 and "does not verify with this key" in err and "not chaining to it" in err
    assert len(lines(directory)) == 3


def test_a_genuinely_signed_checkpoint_of_another_database_fails(cli, three, directory, tmp_path):
    key = private_key(tmp_path)
    name = three[0][0]
    body = json.loads(three[2][1]) | {"n": 4, "prev": hashlib.sha256(three[2][1]).hexdigest()}
    body["database"] = body["database"] | {"database": "casemgmt_staging"}
    with open(directory / name, "ab") as fh:
        fh.write(resign(body, key) + b"\n")
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and "checkpoint n=4" in err and "is of database" in err and "casemgmt_staging" in err


def test_a_database_moved_to_another_cluster_keeps_its_checkpoints(cli, three, directory, tmp_path):
    """Same database name, same rows, another cluster (dump and restore): the hashes decide."""
    body = json.loads(three[2][1]) | {"n": 4, "prev": hashlib.sha256(three[2][1]).hexdigest()}
    body["database"] = body["database"] | {"system_identifier": "42"}
    with open(directory / three[0][0], "ab") as fh:
        fh.write(resign(body, private_key(tmp_path)) + b"\n")
    code, out, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert (code, err) == (0, "")
    assert "note: the latest checkpoint was written on server 42, this is" in out


def test_a_line_altered_in_the_middle_breaks_the_chain_even_if_re_signed(cli, three, directory, tmp_path):
    """Someone holding the signing key rewrites checkpoint 2: the next line's ``prev`` still
    names the original."""
    key = private_key(tmp_path)
    name = three[0][0]
    body = json.loads(three[1][1]) | {"at": "2026-01-01T00:00:00.000000+00:00"}
    rewrite(directory, name, [three[0][1], resign(body, key), three[2][1]])
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and f"checkpoint n=3 ({name}:3" in err and "does not chain to the line before it" in err


def test_a_file_removed_from_the_middle_of_the_directory_is_found(cli, db, session_factory, keys, directory,
                                                                  tmp_path, service_url):
    from casemgmt.database import make_engine
    from casemgmt.privacy.checkpoints import write_checkpoint

    engine = make_engine(service_url)
    try:
        for day in range(3):
            append(session_factory, keys, entries(OTHER, 1, start=day))
            write_checkpoint(engine, directory, private_key(tmp_path), T0 + timedelta(days=day))
    finally:
        engine.dispose()
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["2026-03-02.checkpoints", "2026-03-03.checkpoints", "2026-03-04.checkpoints"]
    assert cli("audit", "verify", "--checkpoints", str(directory))[0] == 0
    (directory / names[1]).unlink()
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and "checkpoint n=3 (2026-03-04.checkpoints:1" in err and "n=2..2 removed" in err


def test_an_emptied_directory_and_a_cut_line_fail(cli, three, directory):
    name = three[0][0]
    with open(directory / name, "ab") as fh:
        fh.write(three[2][1][:40])
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and f"{name}:4: incomplete line" in err
    (directory / name).unlink()
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and "no checkpoints in" in err
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory / "nope"))
    assert code == 2 and "no checkpoint directory" in err


def test_verify_reads_a_separately_configured_public_key(cli, three, directory, tmp_path, monkeypatch):
    """The data protection officer verifies with the public key only."""
    pub = tmp_path / "keys" / "checkpoint.pub"
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_KEY_FILE", str(tmp_path / "not-here.key"))
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_PUBLIC_KEY_FILE", str(pub))
    assert cli("audit", "verify", "--checkpoints", str(directory))[0] == 0
    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    wrong = tmp_path / "other.pub"
    wrong.write_bytes(other)
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_PUBLIC_KEY_FILE", str(wrong))
    code, _, err = cli("audit", "verify", "--checkpoints", str(directory))
    assert code == 1 and err.count("signature does not verify") == 3


# --- the periodic jobs -----------------------------------------------------------------------------


def test_escalate_writes_a_checkpoint_per_run_when_a_directory_is_configured(cli, db, session_factory, keys,
                                                                           directory, monkeypatch):
    append(session_factory, keys, entries(STREAM, 3))
    code, out, _ = cli("escalate")
    assert code == 0 and "checkpoint" not in out
    assert not directory.exists()
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_DIR", str(directory))
    code, out, err = cli("escalate")
    assert code == 0, err
    assert "escalated 0 overdue handovers" in out and "audit checkpoint n=1 written" in out
    # --every: one checkpoint per run, until SIGTERM (sent, for real, after the second run)
    import signal

    import casemgmt.cli as cli_module

    sleeps = []
    install = cli_module.StopSignal.install

    def install_and_count(self):
        install(self)
        wait = self.event.wait

        def counted(seconds: float) -> bool:
            sleeps.append(seconds)
            if len(sleeps) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return wait(0.01)

        self.event.wait = counted
        return self

    monkeypatch.setattr(cli_module.StopSignal, "install", install_and_count)
    code, out, err = cli("escalate", "--every", "60")
    assert code == 0, err
    assert "audit checkpoint n=2 written" in out and "audit checkpoint n=3 written" in out
    assert [json.loads(line)["n"] for _, line in lines(directory)] == [1, 2, 3]


def test_escalate_reports_a_refused_checkpoint_and_keeps_escalating(cli, db, owner_db, session_factory, keys,
                                                                   directory, monkeypatch, tmp_path):
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_DIR", str(directory))
    append(session_factory, keys, entries(STREAM, 4))
    assert cli("escalate")[0] == 0
    cut_off(owner_db, STREAM, keep=1)
    code, out, err = cli("escalate")
    assert code == 1
    assert "escalated 0 overdue handovers" in out
    assert "audit checkpoint REFUSED" in err and f"stream {STREAM} is behind it" in err
    monkeypatch.setenv("CASEMGMT_AUDIT_CHECKPOINT_KEY_FILE", str(tmp_path / "missing.key"))
    code, out, err = cli("escalate")
    assert code == 2 and "missing.key" in err and "escalated" not in out


def test_the_demo_writes_a_checkpoint_with_a_key_it_creates(tmp_path, monkeypatch, capsys):
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    for name in list(os.environ):
        if name.startswith("CASEMGMT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", f"sqlite:///{tmp_path / 'casemgmt.db'}")
    get_settings.cache_clear()
    try:
        assert main(["demo", "--persons", "3", "--no-serve"]) == 0
        out = capsys.readouterr().out
        assert "audit checkpoint n=1 written to .casemgmt/audit-checkpoints/" in out
        key = tmp_path / ".casemgmt" / "audit-checkpoint.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert (tmp_path / ".casemgmt" / "master.key").exists()  # next to the master key
        [(_, line)] = lines(tmp_path / ".casemgmt" / "audit-checkpoints")
        body = json.loads(line)
        assert body["database"] == {"backend": "sqlite", "database": str((tmp_path / "casemgmt.db").resolve())}
        assert sum(q for _, q, _ in body["streams"]) > 0
        get_settings.cache_clear()
        assert main(["audit", "verify", "--checkpoints", ".casemgmt/audit-checkpoints"]) == 0
        assert "checkpoints intact: 1" in capsys.readouterr().out
        get_settings.cache_clear()
        assert main(["demo", "--persons", "3", "--no-serve"]) == 0  # seeded already: one more checkpoint
        assert "audit checkpoint n=2 written" in capsys.readouterr().out
        # While the demo serves, it appends one periodically until it stops.
        stop = checkpoint_periodically(get_settings(), 0.2)
        deadline = time.monotonic() + 20
        while len(lines(tmp_path / ".casemgmt" / "audit-checkpoints")) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        assert len(lines(tmp_path / ".casemgmt" / "audit-checkpoints")) >= 4
        # A checkpoint under way when told to stop is finished first; then the thread ends.
        for thread in threading.enumerate():
            if thread.name == "demo-audit-checkpoints":
                thread.join(30)
                assert not thread.is_alive()
        settled = len(lines(tmp_path / ".casemgmt" / "audit-checkpoints"))
        time.sleep(0.5)
        assert len(lines(tmp_path / ".casemgmt" / "audit-checkpoints")) == settled  # stopped
        get_settings.cache_clear()
        assert main(["audit", "verify", "--checkpoints", ".casemgmt/audit-checkpoints"]) == 0
        assert f"checkpoints intact: {settled}" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
