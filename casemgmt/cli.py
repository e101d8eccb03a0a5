"""The ``casemgmt`` command: migrate, serve, demo, token, check-policies, escalate, notify, ..."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError

from casemgmt.config import get_settings
from casemgmt.policy.source import PolicyError


def _cmd_check_policies(args: argparse.Namespace) -> int:
    from casemgmt.policy.loader import load_policies

    settings = get_settings()
    policies = load_policies(settings.policy_dir)
    print(
        f"policies in {settings.policy_dir} are valid: {len(policies.organisation_kinds)} "
        f"organisation kinds, {len(policies.roles.grants)} roles, "
        f"{len(policies.templates)} chain templates"
    )
    return 0


@contextmanager
def _as_schema_owner(engine, command: str):
    """A permission error of the database says: this command must run as the schema owner."""
    from sqlalchemy.exc import DBAPIError

    from casemgmt.dbroles import DatabaseRoleError

    try:
        yield
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise DatabaseRoleError(
            f"{engine.url.render_as_string(hide_password=True)} may not change the schema ({exc.orig}): "
            f"run {command} as the schema owner, with CASEMGMT_MIGRATION_DATABASE_URL") from None


def _cmd_migrate(args: argparse.Namespace) -> int:
    from casemgmt.database import make_engine
    from casemgmt.migrations import upgrade

    settings = get_settings()
    engine = make_engine(settings.migration_url)
    with _as_schema_owner(engine, "migrate"):
        upgrade(engine)  # one transaction: a refusal leaves the schema as it was
    print(f"database {engine.url.render_as_string(hide_password=True)} is at the latest schema")
    return 0


def _cmd_db_grant(args: argparse.Namespace) -> int:
    from casemgmt.database import make_engine
    from casemgmt.dbroles import grant_service_role
    from casemgmt.migrations import ensure_at_head

    engine = make_engine(get_settings().migration_url)
    try:
        with _as_schema_owner(engine, "`casemgmt db grant`"):
            ensure_at_head(engine)
            print(grant_service_role(engine, args.service_role).describe())
    finally:
        engine.dispose()
    return 0


def _serve(app, host: str, port: int, settings=None) -> None:
    import uvicorn

    from casemgmt.observability import configure_logging, uvicorn_log_config

    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(app, host=host, port=port, log_config=uvicorn_log_config(settings.log_format, settings.log_level),
                access_log=False, timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                timeout_keep_alive=settings.keep_alive_seconds)


def _checked_app(settings, policies=None):
    """The app, after checking its database role here: a refusal inside the server's start-up
    would end in a traceback and the server's own exit code. ``policies``: already loaded from
    ``settings.policy_dir`` (the demo loads them once)."""
    from casemgmt.app import create_app
    from casemgmt.dbroles import ensure_service_role

    app = create_app(settings, policies=policies)
    ensure_service_role(app.state.engine, settings.allow_privileged_db_role)
    return app


def _preflight(settings) -> None:
    """Everything the app's start-up would refuse, checked once before any worker starts, so a
    configuration error is one line (exit 2) and not a traceback per worker."""
    from casemgmt.auth.tokens import TokenVerifier
    from casemgmt.database import make_engine
    from casemgmt.dbroles import ensure_service_role
    from casemgmt.migrations import ensure_at_head
    from casemgmt.policy.loader import load_policies
    from casemgmt.privacy.crypto import load_master_key

    load_policies(settings.policy_dir)
    load_master_key(settings.master_key_file, settings.master_key)
    TokenVerifier(settings)
    engine = make_engine(settings.database_url)
    try:
        try:
            ensure_at_head(engine)
        except Exception as exc:
            from casemgmt.problems import is_database_outage

            if is_database_outage(exc):
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                raise DatabaseUnreachable(
                    f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: "
                    f"{(reason[0] if reason else type(exc).__name__)[:200]}") from None
            raise
        ensure_service_role(engine, settings.allow_privileged_db_role)
    finally:
        engine.dispose()


class DatabaseUnreachable(Exception):
    """The database does not answer at start."""


def _metrics_dir() -> None:
    """Several workers share their metrics through files; must be set before prometheus_client
    is first imported. An operator's directory is emptied: files of an earlier run would count."""
    import os
    import tempfile
    from pathlib import Path

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="casemgmt-metrics-")


def _cmd_serve(args: argparse.Namespace) -> int:
    workers = args.workers if args.workers is not None else get_settings().workers
    if workers < 1:
        print("casemgmt: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1:
        _metrics_dir()
    settings = get_settings()
    host, port = args.host or settings.host, args.port or settings.port
    _preflight(settings)
    if workers == 1:
        _serve(_checked_app(settings), host, port, settings)
        return 0
    import uvicorn

    from casemgmt import workers as worker_processes
    from casemgmt.observability import configure_logging, uvicorn_log_config

    configure_logging(settings.log_format, settings.log_level)
    options = dict(log_config=uvicorn_log_config(settings.log_format, settings.log_level), access_log=False,
                   timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                   timeout_keep_alive=settings.keep_alive_seconds)
    # Each worker builds its own app (own engine and pool) from the environment; the parent
    # restarts a worker that dies and, on SIGTERM, lets every worker finish its requests.
    if worker_processes.balanced():  # one socket per worker (casemgmt/workers.py)
        try:
            held = worker_processes.hold_address(host, port)
        except OSError as exc:
            print(f"casemgmt serve: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 2
        return worker_processes.run(held, host, workers, options)
    uvicorn.run(worker_processes.APP, factory=True, host=host, port=port, workers=workers, **options)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from casemgmt.demo import seed_demo
    from casemgmt.demo.checkpoint import checkpoint_periodically, demo_checkpoint
    from casemgmt.demo.seed import DemoIncomplete
    from casemgmt.policy.loader import load_policies

    settings = get_settings()
    # Progress goes to stderr, so that stdout (the summary and the tokens) stays clean to read.
    print(f"Migrating and seeding the demo ({args.persons} persons) ...", file=sys.stderr, flush=True)
    # One load of the policies for the seed, the releases and the app (each loaded them anew).
    policies = load_policies(settings.policy_dir)
    try:
        summary = seed_demo(settings, persons=args.persons, seed=args.seed, progress=sys.stderr,
                            policies=policies)
    except DemoIncomplete as exc:
        print(f"casemgmt demo: {exc}", file=sys.stderr)
        return 2
    print(summary.describe())
    print("Releasing the closed quarters of the steering report ...", file=sys.stderr, flush=True)
    _demo_releases(settings, policies)
    checkpoint_failed = demo_checkpoint(settings)
    host, port = args.host or settings.host, args.port or settings.port
    print(f"\nWeb interface: http://{host}:{port}/  (the login page lists the demo users)")
    print(f"API docs: http://{host}:{port}/docs  (click 'Authorize' and paste a token above)\n")
    if args.no_serve:
        return checkpoint_failed
    if make_url_dialect(settings.database_url) == "postgresql" and not settings.allow_privileged_db_role:
        from casemgmt.dbroles import DEMO_SERVICE_ROLE, demo_service_url

        # As in production (README, Database roles): the seeding role owns the schema, the
        # server runs as a role that owns nothing and may only do what the service needs.
        service_url = demo_service_url(settings.database_url)
        if service_url is not None:
            print(f"The demo serves as the restricted database role {DEMO_SERVICE_ROLE} "
                  "(casemgmt db grant); it seeded as the schema owner.\n")
            settings = settings.model_copy(update={"database_url": service_url,
                                                   "migration_database_url": settings.database_url})
        else:
            print("Note: the demo serves as the database role that seeded it, which may not create "
                  "roles; in production run `casemgmt serve` as the restricted service role (see README, "
                  "Database roles).\n")
            settings = settings.model_copy(update={"allow_privileged_db_role": True})
    # Only the demo lists its users on the login page.
    settings = settings.model_copy(update={"demo_login": True})
    app = _checked_app(settings, policies)
    # Like `escalate --every`, the running demo anchors its audit trail outside the database.
    stop = checkpoint_periodically(settings, settings.demo_checkpoint_every_seconds)
    try:
        _serve(app, host, port, settings)
    finally:
        stop.set()
    return 0


def _demo_releases(settings, policies) -> None:
    """Release every closed quarter of the seeded data, so the steering member's token has
    something to read; prints how much of the process log survived anonymisation."""
    from casemgmt.clock import utcnow
    from casemgmt.database import make_engine, make_sessionmaker
    from casemgmt.steering.releases import run_releases

    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            made = run_releases(session, policies.steering, policies.goals, utcnow())
    finally:
        engine.dispose()
    total = sum(r.document["process"]["log"]["chains_total"] for r in made)
    published = sum(r.document["process"]["log"]["chains_published"] for r in made)
    if made:
        share = f"{100 * published / total:.0f} %" if total else "-"
        print(f"\nSteering report: {len(made)} releases of closed quarters; process-mining logs hold "
              f"{published} of {total} ended chains ({share}) at k = {policies.steering.min_variant_chains}.")


def make_url_dialect(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name()


def _cmd_token(args: argparse.Namespace) -> int:
    from casemgmt.auth.tokens import mint_dev_token

    settings = get_settings()
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    token = mint_dev_token(settings, args.user, args.org, roles, ttl=timedelta(minutes=args.minutes))
    print(token)
    return 0


def _cmd_openapi(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from casemgmt.app import openapi_document

    text = json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    out = Path(args.output)
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is out of date: run `casemgmt openapi`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    import time

    from casemgmt.database import make_engine
    from casemgmt.privacy.audit import verify_parallel
    from casemgmt.privacy.crypto import keyring_from_settings
    from casemgmt.privacy.rotation import audit_keyset

    settings = get_settings()
    keys = keyring_from_settings(settings)
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            keyset = audit_keyset(conn, keys)
    finally:
        engine.dispose()
    public_key = _checkpoint_public_key(settings) if args.checkpoints else None
    started = time.perf_counter()
    result = verify_parallel(settings.database_url, keyset, workers=args.workers)
    seconds = time.perf_counter() - started
    if result.ok:
        print(f"audit trail intact: {result.rows} rows verified in {seconds:.2f} s")
        code = 0
    else:
        where = f" at row {result.first_bad_id}" if result.first_bad_id is not None else ""
        print(f"audit trail BROKEN{where}: {result.problem} ({result.rows} rows verified intact)",
              file=sys.stderr)
        code = 1
    if args.checkpoints:
        code = max(code, _verify_checkpoints(settings, args.checkpoints, public_key))
    return code


def _checkpoint_public_key(settings):
    from casemgmt.privacy.checkpoints import load_public_key

    return load_public_key(settings.audit_checkpoint_public_key_file, settings.audit_checkpoint_key_file)


def _verify_checkpoints(settings, directory, public_key) -> int:
    from casemgmt.database import make_engine
    from casemgmt.privacy.checkpoints import verify_checkpoints

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            report = verify_checkpoints(conn, directory, public_key)
    finally:
        engine.dispose()
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(f"checkpoints intact: {report.checkpoints} in {directory} verified; the database is at "
              f"or beyond each; the latest is {report.latest.label}")
        return 0
    print(f"audit trail FAILS ITS CHECKPOINTS in {directory}:", file=sys.stderr)
    for problem in report.problems[:20]:
        print(f"  {problem}", file=sys.stderr)
    if len(report.problems) > 20:
        print(f"  ... and {len(report.problems) - 20} more", file=sys.stderr)
    return 1


def _cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from casemgmt.database import make_engine
    from casemgmt.migrations import ensure_at_head
    from casemgmt.privacy.checkpoints import CheckpointError, load_private_key

    settings = get_settings()
    directory = args.dir or settings.audit_checkpoint_dir
    if directory is None:
        raise CheckpointError("no checkpoint directory: pass --dir or set CASEMGMT_AUDIT_CHECKPOINT_DIR")
    key = load_private_key(settings.audit_checkpoint_key_file)
    engine = make_engine(settings.database_url)
    try:
        ensure_at_head(engine)
        return _checkpoint_writer(engine, directory, key)()
    finally:
        engine.dispose()


def _checkpoint_writer(engine, directory, key):
    """Write one signed checkpoint; a refusal (the trail is behind or diverges from the last
    checkpoint) or a failing directory is reported and gives 1, so a loop keeps running."""
    from casemgmt.privacy.checkpoints import CheckpointError, CheckpointRefused, write_checkpoint

    def write() -> int:
        try:
            print(write_checkpoint(engine, directory, key).describe(), flush=True)
            return 0
        except (CheckpointRefused, CheckpointError) as exc:
            print(f"audit checkpoint REFUSED: {exc}", file=sys.stderr, flush=True)
            return 1

    return write


def _cmd_audit_keygen(args: argparse.Namespace) -> int:
    from casemgmt.privacy.checkpoints import generate_key_file, key_id, load_private_key

    path = args.out or get_settings().audit_checkpoint_key_file
    public = generate_key_file(path)
    print(f"wrote the checkpoint signing key {path} (mode 0600: keep it away from the database "
          f"server, never commit it) and its public key {public} "
          f"(key id {key_id(load_private_key(path).public_key())})")
    return 0


def _service_sessions(settings):
    """An engine checked to be at the latest schema, and sessions able to write the audit trail."""
    from casemgmt.database import make_engine, make_sessionmaker
    from casemgmt.dbroles import ensure_service_role
    from casemgmt.migrations import ensure_at_head
    from casemgmt.privacy.crypto import keyring_from_settings

    engine = make_engine(settings.database_url)
    ensure_at_head(engine)
    ensure_service_role(engine, settings.allow_privileged_db_role)
    keys = keyring_from_settings(settings)
    return make_sessionmaker(engine, audit_key=keys.audit_key, audit_key_id=keys.key_id)


class StopSignal:
    """Set by SIGTERM or SIGINT: a periodic job finishes the batch it is in and ends."""

    def __init__(self) -> None:
        import threading

        self.event = threading.Event()

    def install(self) -> StopSignal:
        import signal

        self._previous = {sig: signal.signal(sig, lambda *_: self.event.set())
                          for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def restore(self) -> None:
        import signal

        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)

    def __call__(self) -> bool:
        return self.event.is_set()


def _repeat(every: float | None, run, stop: StopSignal, job: str) -> int:
    """Run once, or every ``every`` seconds until SIGTERM/SIGINT (for a container without cron).
    A signal ends the loop between batches: the run in progress finishes what it claimed."""
    import time

    from casemgmt.observability import count_outcome

    def one() -> None:
        try:
            run()
        except Exception as exc:
            from casemgmt.problems import is_database_outage

            count_outcome(job, ok=False)
            if not every or not is_database_outage(exc):
                raise
            # The loop outlives a database restart; the next run tries again.
            print(f"{job}: database unavailable ({type(exc).__name__}); trying again in {every:g} s",
                  file=sys.stderr, flush=True)
            return
        count_outcome(job, ok=True)

    try:
        if not every:
            one()
            return 0
        while not stop():
            started = time.monotonic()
            one()
            stop.event.wait(max(every - (time.monotonic() - started), 0))
        print(f"{job}: stopped by signal", flush=True)
        return 0
    finally:
        stop.restore()


def _job_metrics(port: int | None) -> None:
    """A periodic job is no HTTP server: with --metrics-port it serves its own /metrics."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=get_settings().metrics_job_address)


def _cmd_escalate(args: argparse.Namespace) -> int:
    from casemgmt.clock import utcnow
    from casemgmt.handovers.escalation import escalate_overdue
    from casemgmt.policy.loader import load_policies

    settings = get_settings()
    _job_logging(settings)
    policies = load_policies(settings.policy_dir)
    policy = policies.handovers
    factory = _service_sessions(settings)
    checkpoint = _periodic_checkpoint(settings, factory.kw["bind"])
    stop = StopSignal().install()
    _job_metrics(args.metrics_port)
    failed = []

    def run() -> None:
        from casemgmt.rights.reminders import remind_overdue

        with factory() as session:
            report = escalate_overdue(session, policy, utcnow(), settings.public_base_url, should_stop=stop)
            reminders = remind_overdue(session, utcnow(), settings.public_base_url)
        if policies.steering.release_automatic:
            from casemgmt.steering.releases import run_releases

            with factory() as session:
                for row in run_releases(session, policies.steering, policies.goals, utcnow()):
                    print(f"released {row.period} for jurisdiction {row.area_jurisdiction_id} as release "
                          f"{row.number}", flush=True)
        line = f"escalated {report.escalated} overdue handovers, queued {report.notifications} notifications"
        if report.without_contact:
            line += f"; {report.without_contact} recipients have no contact configured"
        line += (f"; reminded of {reminders.reminded} overdue data subject requests "
                 f"({reminders.notifications} notifications)")
        print(line, flush=True)
        if checkpoint is not None and checkpoint():
            failed.append(True)

    return _repeat(args.every, run, stop, "escalate") or (1 if failed else 0)


def _cmd_report_release(args: argparse.Namespace) -> int:
    from casemgmt.clock import utcnow
    from casemgmt.policy.loader import load_policies
    from casemgmt.problems import Problem
    from casemgmt.steering.releases import run_releases

    settings = get_settings()
    policies = load_policies(settings.policy_dir)
    factory = _service_sessions(settings)
    try:
        with factory() as session:
            made = run_releases(session, policies.steering, policies.goals, utcnow(), area_id=args.area,
                                quarter=args.quarter, again=args.again)
    except Problem as exc:
        print(f"casemgmt: {exc.detail}", file=sys.stderr)
        return 1
    for row in made:
        log = row.document["process"]["log"]
        print(f"release {row.number}: {row.period} for {row.document['area']['name']}"
              + (f" (edition {row.edition}, revises {row.revises})" if row.revises else "")
              + f"; process log: {log['chains_published']} of {log['chains_total']} chains "
              f"({100 * log['share_published']:.0f} %), {log['events_published']} of {log['events_total']} events")
    if not made:
        print("nothing due: every closed quarter is released")
    return 0


def _periodic_checkpoint(settings, engine):
    """With CASEMGMT_AUDIT_CHECKPOINT_DIR set, each run of a periodic job writes a signed audit
    checkpoint; the key is loaded now, so a missing key stops the job at start."""
    if settings.audit_checkpoint_dir is None:
        return None
    from casemgmt.privacy.checkpoints import load_private_key

    key = load_private_key(settings.audit_checkpoint_key_file)
    return _checkpoint_writer(engine, settings.audit_checkpoint_dir, key)


def _cmd_notify(args: argparse.Namespace) -> int:
    from casemgmt.clock import utcnow
    from casemgmt.notifications.channels import EmailChannel, WebhookChannel
    from casemgmt.notifications.service import deliver_due, requeue

    settings = get_settings()
    _job_logging(settings)
    factory = _service_sessions(settings)
    stop = StopSignal().install()
    _job_metrics(args.metrics_port)
    if args.requeue_failed:
        with factory() as session:
            print(f"re-queued {requeue(session, None, utcnow())} failed notifications")
    channels = {
        "email": EmailChannel(settings.smtp_host, settings.smtp_port, settings.smtp_from,
                              settings.smtp_starttls, settings.smtp_username, settings.smtp_password,
                              settings.smtp_timeout_seconds),
        "webhook": WebhookChannel(settings.webhook_secret, settings.webhook_timeout_seconds,
                                  settings.webhook_allow_private_networks),
    }

    def run() -> None:
        report = deliver_due(factory, channels, utcnow, settings.notify_max_attempts, should_stop=stop)
        print(f"delivered {report.delivered}, will retry {report.retried}, failed {report.failed}",
              flush=True)

    return _repeat(args.every, run, stop, "notify")


def _job_logging(settings) -> None:
    from casemgmt.observability import configure_logging

    configure_logging(settings.log_format, settings.log_level)


def _privacy(settings):
    from casemgmt.policy.loader import load_policies
    from casemgmt.privacy.crypto import keyring_from_settings
    from casemgmt.privacy.service import Privacy

    policies = load_policies(settings.policy_dir)
    return policies, Privacy(policies.data, keyring_from_settings(settings))


def _cmd_retention_run(args: argparse.Namespace) -> int:
    from casemgmt.clock import utcnow
    from casemgmt.rights import retention, tombstones

    settings = get_settings()
    policies, privacy = _privacy(settings)
    factory = _service_sessions(settings)
    directory = settings.tombstone_dir
    stop = StopSignal().install()

    def on_erased(batch) -> None:
        if directory is not None:
            tombstones.append(directory, batch)

    def run() -> None:
        now = utcnow()
        report = retention.run(factory, privacy, policies.steering.conference_category, now,
                               dry_run=args.dry_run, batch=args.batch, on_erased=on_erased)
        print(report.describe(args.dry_run), flush=True)
        if args.dry_run:
            with factory() as session:
                soon = retention.upcoming(session, privacy, policies.steering.conference_category, now, 30)
                session.rollback()
            print(f"due from {soon['from']} until {soon['until']} (persons per category): " + ", ".join(
                f"{c['category']} {c['persons']}" for c in soon["categories"] if c["persons"]), flush=True)

    return _repeat(args.every, run, stop, "retention")


def _cmd_erasure_replay(args: argparse.Namespace) -> int:
    from casemgmt.clock import utcnow
    from casemgmt.rights.tombstones import replay

    settings = get_settings()
    factory = _service_sessions(settings)
    directory = args.dir or settings.tombstone_dir
    if directory is None:
        print("casemgmt: no tombstone directory (set CASEMGMT_ERASURE_TOMBSTONE_DIR or "
              "CASEMGMT_AUDIT_CHECKPOINT_DIR, or pass --dir): replaying the table only", file=sys.stderr)
    report = replay(factory, directory, utcnow(), dry_run=args.dry_run)
    print(("dry run: " if args.dry_run else "") + report.describe())
    for person_id in report.erased_again:
        print(f"  {'would erase' if args.dry_run else 'erased'} again: {person_id}")
    return 0


def _owner_sessions(settings, keys):
    """Sessions as the schema owner (CASEMGMT_MIGRATION_DATABASE_URL): `keys rotate` writes the
    archived audit keys, which the service role may only read."""
    from casemgmt.database import make_engine, make_sessionmaker
    from casemgmt.migrations import ensure_at_head

    engine = make_engine(settings.migration_url)
    ensure_at_head(engine)
    return make_sessionmaker(engine, audit_key=keys.audit_key, audit_key_id=keys.key_id)


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    from casemgmt.clock import utcnow
    from casemgmt.privacy.crypto import keyring_from_settings
    from casemgmt.privacy.rotation import rotate

    settings = get_settings()
    keys = keyring_from_settings(settings)
    factory = _owner_sessions(settings, keys)
    engine = factory.kw["bind"]
    with _as_schema_owner(engine, "`casemgmt keys rotate`"):
        report = rotate(factory, keys, utcnow(), batch=args.batch)
    print(report.describe())
    return 0 if report.remaining == 0 else 1


def _cmd_keys_status(args: argparse.Namespace) -> int:
    from casemgmt.database import make_engine
    from casemgmt.privacy.crypto import keyring_from_settings
    from casemgmt.privacy.rotation import key_status

    settings = get_settings()
    keys = keyring_from_settings(settings)
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            status = key_status(conn, keys)
    finally:
        engine.dispose()
    print(status.describe())
    return 0 if all(k == keys.key_id for k in status.person_keys) else 1


def _cmd_chains_migrate(args: argparse.Namespace) -> int:
    from casemgmt.chains.catalog import register_templates
    from casemgmt.chains.migrate import check_plans, parse_where, run_migration
    from casemgmt.clock import utcnow
    from casemgmt.policy.loader import load_policies

    settings = get_settings()
    policies = load_policies(settings.policy_dir)
    template = policies.templates.get(args.template)
    if template is None:
        print(f"casemgmt: no chain template {args.template!r} in {settings.policy_dir}", file=sys.stderr)
        return 2
    if not 2 <= args.to <= template.version:
        print(f"casemgmt: --to must be a version from 2 to {template.version} (the file's version)", file=sys.stderr)
        return 2
    factory = _service_sessions(settings)
    with factory() as session:
        # A real run stores the new version (as the service does at start); a dry run only reads.
        catalog = register_templates(session, policies.templates, utcnow(), store=not args.dry_run)
        check_plans(catalog, policies.migrations)
        try:
            filters = parse_where(args.where or [], session)
        except ValueError as exc:
            print(f"casemgmt: {exc}", file=sys.stderr)
            return 2
    plans = policies.migrations.get(args.template, {})
    mode = "dry run: nothing is changed" if args.dry_run else "migrating, one transaction per chain"
    print(f"{args.template} -> version {args.to} ({mode})", flush=True)
    report = run_migration(factory, catalog, plans, args.template, args.to, filters, dry_run=args.dry_run,
                           clock=utcnow, batch_size=args.batch_size, user=args.by,
                           report=lambda outcome: print(outcome.line(), flush=True))
    print(report.summary())
    return 1 if report.counts.get("refused") and not args.dry_run else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="casemgmt", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-policies", help="validate the policy files and exit")
    p.set_defaults(func=_cmd_check_policies)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("db", help="database roles (PostgreSQL)")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    g = db_sub.add_parser("grant", help="give the service role exactly the privileges it needs, revoke the rest "
                                        "(run as the schema owner after every migrate)")
    g.add_argument("--service-role", required=True, metavar="NAME", help="the role of CASEMGMT_DATABASE_URL")
    g.set_defaults(func=_cmd_db_grant)

    p = sub.add_parser("serve", help="serve the API (the database must be migrated)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default CASEMGMT_WORKERS, 1); SIGTERM lets requests finish")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="migrate, seed a synthetic Kreis, print tokens and serve")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--persons", type=int, default=400, help="persons to seed (default 400)")
    p.add_argument("--seed", type=int, default=2017, help="random seed for the synthetic data")
    p.add_argument("--no-serve", action="store_true", help="seed and print tokens, do not serve")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("audit", help="audit trail tools")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    v = audit_sub.add_parser("verify", help="check the hash chain; exit 1 naming the first bad row")
    v.add_argument("--workers", type=int, default=None,
                   help="processes for large trails (default: one per core)")
    v.add_argument("--checkpoints", type=Path, metavar="DIR",
                   help="also hold the database against the signed checkpoints in DIR")
    v.set_defaults(func=_cmd_audit_verify)
    c = audit_sub.add_parser("checkpoint", help="append a signed checkpoint of every stream's head to a directory")
    c.add_argument("--dir", type=Path, help="checkpoint directory (default: CASEMGMT_AUDIT_CHECKPOINT_DIR)")
    c.set_defaults(func=_cmd_audit_checkpoint)
    k = audit_sub.add_parser("keygen", help="create the Ed25519 key pair that signs checkpoints")
    k.add_argument("--out", type=Path, help="private key file (default: CASEMGMT_AUDIT_CHECKPOINT_KEY_FILE)")
    k.set_defaults(func=_cmd_audit_keygen)

    p = sub.add_parser("report", help="steering report releases")
    report_sub = p.add_subparsers(dest="report_command", required=True)
    r = report_sub.add_parser("release", help="release every due quarter (or --quarter) of the steering report")
    r.add_argument("--quarter", help="a closed quarter, e.g. 2026Q3 (default: every due quarter not yet released)")
    r.add_argument("--area", type=int, help="jurisdiction id of a Kreis or kreisfreie Stadt (default: all)")
    r.add_argument("--again", action="store_true",
                   help="re-release an already released --quarter, protected together with the earlier release")
    r.set_defaults(func=_cmd_report_release)

    p = sub.add_parser("escalate", help="escalate overdue handovers and queue notifications (idempotent)")
    p.add_argument("--every", type=float, metavar="SECONDS", help="keep running, once every SECONDS")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on PORT")
    p.set_defaults(func=_cmd_escalate)

    p = sub.add_parser("notify", help="deliver queued notifications by email and webhook, with retries")
    p.add_argument("--every", type=float, metavar="SECONDS", help="keep running, once every SECONDS")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on PORT")
    p.add_argument("--requeue-failed", action="store_true",
                   help="first put notifications that failed for good back in the queue")
    p.set_defaults(func=_cmd_notify)

    p = sub.add_parser("retention", help="delete what the retention periods of policies/data.yaml say is due")
    r_sub = p.add_subparsers(dest="retention_command", required=True)
    r = r_sub.add_parser("run", help="delete due categories, erase persons whose every category is due (idempotent)")
    r.add_argument("--dry-run", action="store_true", help="print what would be deleted now and in the next 30 days")
    r.add_argument("--every", type=float, metavar="SECONDS", help="keep running, once every SECONDS")
    r.add_argument("--batch", type=int, default=500, help="persons per transaction (default 500)")
    r.set_defaults(func=_cmd_retention_run)

    p = sub.add_parser("erasure", help="erasure tombstones")
    e_sub = p.add_subparsers(dest="erasure_command", required=True)
    e = e_sub.add_parser("replay", help="after restoring a backup: erase again every person a tombstone names")
    e.add_argument("--dir", type=Path, help="tombstone directory (default: CASEMGMT_ERASURE_TOMBSTONE_DIR, "
                                            "else CASEMGMT_AUDIT_CHECKPOINT_DIR)")
    e.add_argument("--dry-run", action="store_true", help="only print whom it would erase again")
    e.set_defaults(func=_cmd_erasure_replay)

    p = sub.add_parser("keys", help="master key rotation")
    k_sub = p.add_subparsers(dest="keys_command", required=True)
    k = k_sub.add_parser("rotate", help="rewrap every person key under the current master key (as the schema "
                                        "owner; online, resumable)")
    k.add_argument("--batch", type=int, default=500, help="keys per transaction (default 500)")
    k.set_defaults(func=_cmd_keys_rotate)
    k = k_sub.add_parser("status", help="how many person keys under which master key (exit 1 while any is under "
                                        "another than the current one)")
    k.set_defaults(func=_cmd_keys_status)

    p = sub.add_parser("chains", help="running chains")
    chains_sub = p.add_subparsers(dest="chains_command", required=True)
    m = chains_sub.add_parser(
        "migrate", help="move open chains of a template to a newer version by its migration plan "
                        "(policies/chains/<key>.migrations.yaml)")
    m.add_argument("--template", required=True, metavar="KEY", help="the template key")
    m.add_argument("--to", required=True, type=int, metavar="N", help="the version to migrate to")
    m.add_argument("--dry-run", action="store_true",
                   help="list per chain what would change and which chains cannot be migrated, change nothing")
    m.add_argument("--where", action="append", metavar="NAME=VALUE",
                   help="only some chains (repeatable, all must hold): jurisdiction=KEY|ID (and below), "
                        "chain=UUID, started_before=YYYY-MM-DD, started_after=YYYY-MM-DD, version=N")
    m.add_argument("--batch-size", type=int, default=200, metavar="N", help="chains read per batch (default 200)")
    m.add_argument("--by", default="system:template-migration", metavar="NAME",
                   help="who runs the migration, for the chain events and the audit trail")
    m.set_defaults(func=_cmd_chains_migrate)

    p = sub.add_parser("openapi", help="write (or --check) the committed OpenAPI document")
    p.add_argument("--output", default="openapi/openapi.json")
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the app")
    p.set_defaults(func=_cmd_openapi)

    p = sub.add_parser("token", help="mint a development token signed with the dev key pair")
    p.add_argument("--user", required=True, help="user id (sub claim)")
    p.add_argument("--org", required=True, help="organisation key (org claim)")
    p.add_argument("--roles", required=True, help="comma-separated roles, e.g. case_manager")
    p.add_argument("--minutes", type=int, default=480,
                   help="validity in minutes (the API refuses more than CASEMGMT_JWT_MAX_LIFETIME_MINUTES)")
    p.set_defaults(func=_cmd_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PolicyError as exc:
        print(f"casemgmt: policy error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        # A setting from the environment that does not parse: one line per setting.
        for error in exc.errors():
            name = "CASEMGMT_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"casemgmt: configuration error: {name}: {error['msg']}", file=sys.stderr)
        return 2
    except Exception as exc:
        from casemgmt.auth.tokens import KeyConfigurationError
        from casemgmt.dbroles import DatabaseRoleError
        from casemgmt.migrations import DatabaseNotMigrated
        from casemgmt.privacy.checkpoints import CheckpointError
        from casemgmt.privacy.crypto import MasterKeyError

        if isinstance(exc, (KeyConfigurationError, DatabaseNotMigrated, MasterKeyError, DatabaseRoleError,
                            CheckpointError, DatabaseUnreachable)):
            print(f"casemgmt: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
