"""Rolling a new template version out to running chains, against PostgreSQL: a dry run that
changes nothing, a run that migrates each chain in its own transaction (events, audit, new
version, organisations), chains the plan does not fit left as they were, a second run that
touches nothing, migrated chains that run on to their end, and the command line. The templates are
written here, under a key of their own per test, so the shipped ones stay at their version."""

from __future__ import annotations

import base64
import dataclasses
import textwrap
import uuid
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from casemgmt.chains.catalog import register_templates
from casemgmt.chains.migrate import MigrationFilters, run_migration
from casemgmt.chains.migration import load_migration_plans
from casemgmt.chains.models import Chain, ChainEvent, ChainStep
from casemgmt.chains.spec import ChainTemplate
from casemgmt.cli import main
from casemgmt.config import get_settings
from casemgmt.privacy.models import AuditEvent
from casemgmt.steering.goals import Goal, GoalMeasure, GoalTier, goal_clocks
from casemgmt.steering.ocel import export_ocel
from http_helpers import ok, problem
from test_api import acted, events, get_chain, new_person, states, step

KI = ("ennetal_ki", "case_manager")
ABH = ("ennetal_abh", "clerk")
JC = ("ennetal_jobcenter", "clerk")
VHS = ("ennetal_vhs", "clerk")
GA = ("ennetal_gesundheitsamt", "clerk")


def versions(key: str) -> tuple[ChainTemplate, ChainTemplate, str]:
    """Version 1, version 2 (a Bürgergeld step, a shorter course deadline, the health check gone,
    'work' now 'placement') and the plan between them."""
    def step(k, owner, requires=(), optional=False, due=None):
        return {"key": k, "title": k.replace("_", " ").title(), "owner": owner, "requires": list(requires),
                "optional": optional, "description": "", "due": due}

    course_due = {"after": "entitlement", "on": "completed", "for": "start"}
    v1 = ChainTemplate.from_document({"key": key, "version": 1, "title": "Kurs", "description": "", "steps": [
        step("first_interview", "case_management"),
        step("entitlement", "auslaenderbehoerde", ["first_interview"]),
        step("health", "gesundheitsamt", ["first_interview"], optional=True),
        step("course", "course_provider", ["entitlement"], due=course_due | {"days": 56}),
        step("work", "jobcenter", ["course"]),
    ]})
    v2 = ChainTemplate.from_document({"key": key, "version": 2, "title": "Kurs", "description": "", "steps": [
        step("first_interview", "case_management"),
        step("entitlement", "auslaenderbehoerde", ["first_interview"]),
        step("buergergeld", "jobcenter", ["entitlement"]),
        step("course", "course_provider", ["entitlement"], due=course_due | {"days": 42}),
        step("placement", "jobcenter", ["course", "buergergeld"]),
    ]})
    plan = f"""
        template: {key}
        migrations:
          - from: 1
            to: 2
            description: Bürgergeld-Bescheid als eigener Schritt, Kursbeginn binnen 6 Wochen
            renamed:
              work: placement
            removed:
              health:
                reason: die Erstuntersuchung läuft außerhalb der Kette
            added:
              buergergeld:
                skip: when_passed
                reason: der Bescheid lag vor, als der Schritt eingeführt wurde
            due:
              course:
                if_past: keep
    """
    return v1, v2, textwrap.dedent(plan).lstrip("\n")


def client_for(app_factory, templates: dict[str, ChainTemplate], migrations=None) -> TestClient:
    return TestClient(app_factory(templates, migrations), raise_server_exceptions=False)


@pytest.fixture
def app_with(settings, db, policies, clock):
    """An app whose policies carry the given templates besides the shipped ones."""
    from casemgmt.app import create_app
    from conftest import MASTER_KEY

    def make(templates: dict[str, ChainTemplate], migrations=None):
        extended = dataclasses.replace(policies, templates=policies.templates | templates,
                                       migrations=migrations or {})
        return create_app(settings, engine=db, policies=extended, clock=clock, master_key=MASTER_KEY)

    return make


def chain_in(client, auth, world, key: str, family_name: str) -> dict[str, Any]:
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name=family_name,
                        given_names="Amal", birth_date="1994-02-03")
    return ok(client.post("/chains", json={"person_id": person["id"], "template_key": key}, headers=ki), 201)


def walk(client, headers, chain_id: str, *moves: tuple[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, action in moves:
        out = acted(client, headers, chain_id, key, action)
    return out


def test_a_new_version_is_rolled_out_from_a_dry_run_to_the_end(app_with, auth, world, clock, session_factory,
                                                                 tmp_path):
    key = f"kurs_{uuid.uuid4().hex[:8]}"
    v1, v2, plan_text = versions(key)
    (tmp_path / f"{key}.migrations.yaml").write_text(plan_text, encoding="utf-8")
    plans = load_migration_plans(tmp_path, {key: v2})[key]

    with client_for(app_with, {key: v1}) as client:
        ki, abh, vhs, ga = auth(*KI), auth(*ABH), auth(*VHS), auth(*GA)
        fresh = chain_in(client, auth, world, key, "Eins")
        entitled = chain_in(client, auth, world, key, "Zwei")
        walk(client, ki, entitled["id"], ("first_interview", "start"), ("first_interview", "complete"))
        walk(client, abh, entitled["id"], ("entitlement", "start"), ("entitlement", "complete"))
        past = chain_in(client, auth, world, key, "Drei")
        walk(client, ki, past["id"], ("first_interview", "start"), ("first_interview", "complete"))
        walk(client, abh, past["id"], ("entitlement", "start"), ("entitlement", "complete"))
        walk(client, vhs, past["id"], ("course", "start"), ("course", "complete"))
        walk(client, auth(*JC), past["id"], ("work", "start"))
        waiting = chain_in(client, auth, world, key, "Sieben")
        walk(client, ki, waiting["id"], ("first_interview", "start"), ("first_interview", "complete"))
        walk(client, abh, waiting["id"], ("entitlement", "start"), ("entitlement", "complete"))
        walk(client, vhs, waiting["id"], ("course", "start"), ("course", "complete"))
        examined = chain_in(client, auth, world, key, "Vier")
        walk(client, ki, examined["id"], ("first_interview", "start"), ("first_interview", "complete"))
        walk(client, ga, examined["id"], ("health", "start"))
        closed = chain_in(client, auth, world, key, "Fuenf")
        ok(client.post(f"/chains/{closed['id']}/close", json={"reason": "moved_away"}, headers=ki))
        before = {c["id"]: get_chain(client, ki, c["id"]) for c in (fresh, entitled, past, waiting, examined)}
        assert step(before[entitled["id"]], "health")["assigned_organisation_id"] \
            == world.organisations["ennetal_gesundheitsamt"]

    # A service still running with the old policy files while the new version is rolled out.
    old_service = client_for(app_with, {key: v1}).__enter__()
    clock.advance(days=3)
    with session_factory() as session:
        catalog = register_templates(session, {key: v2}, clock())
    lines: list[str] = []

    def run(dry_run: bool):
        return run_migration(session_factory, catalog, plans, key, 2, MigrationFilters(), dry_run=dry_run,
                             clock=clock, batch_size=2, report=lambda o: lines.append(o.line()))

    def event_count() -> int:
        with session_factory() as session:
            return session.scalar(select(func.count()).select_from(ChainEvent))

    goal = Goal("kurs_in_6_wochen", GoalTier.ergebnisziel, "Kurs", "", None, GoalMeasure(
        templates=(key,), start_step="entitlement", start_on="completed", stop_step="course", stop_on="started",
        within_days=42, target_share=0.8))
    with session_factory() as session:
        clocks_before = goal_clocks(session, goal)
    assert len(clocks_before) == 3
    events_before = event_count()
    dry = run(dry_run=True)
    assert dry.counts == {"would_migrate": 4, "refused": 1} and dry.keep_version == 1
    refused_line = next(line for line in lines if line.startswith(examined["id"]))
    assert "cannot migrate: step 'health' was started (it is in_progress); version 2 removes it" in refused_line
    assert any(line.startswith(past["id"]) and "buergergeld: planned -> skipped" in line for line in lines)
    assert any(line.startswith(waiting["id"]) and "placement: ready -> planned" in line for line in lines)
    assert event_count() == events_before  # a dry run changes nothing
    with session_factory() as session:
        assert set(session.scalars(select(Chain.template_version).where(Chain.template_key == key))) == {1}

    lines.clear()
    done = run(dry_run=False)
    assert done.counts == {"migrated": 4, "refused": 1}
    again = run(dry_run=False)  # restartable: what was migrated is never migrated twice
    assert again.counts == {"refused": 1}
    with session_factory() as session:
        rows = dict(session.execute(select(Chain.id, Chain.template_version).where(Chain.template_key == key)).all())
        assert {str(k): v for k, v in rows.items()} == {fresh["id"]: 2, entitled["id"]: 2, past["id"]: 2,
                                                       waiting["id"]: 2, examined["id"]: 1, closed["id"]: 1}
        audited = session.scalars(select(AuditEvent.entity_id).where(AuditEvent.subtype == "chain.migrate")).all()
        assert sorted(audited) == sorted([fresh["id"], entitled["id"], past["id"], waiting["id"]])
        keys = session.scalars(select(ChainStep.key).where(ChainStep.chain_id == uuid.UUID(past["id"]))).all()
        assert sorted(keys) == ["buergergeld", "course", "entitlement", "first_interview", "placement"]
        # The migration's events do not move a goal's clock, and the process-mining log knows them.
        assert goal_clocks(session, goal) == clocks_before
        doc, _ = export_ocel(session, min_variant_chains=1)
        assert {"template migrated", "step migrated", "step skipped"} <= {e["type"] for e in doc["events"]}

    # It reads the migrated chains: the new version is read from the database when first needed.
    assert get_chain(old_service, auth(*KI), entitled["id"])["template_version"] == 2
    old_service.__exit__(None, None, None)

    with client_for(app_with, {key: v2}, {key: plans}) as client:
        ki = auth(*KI)
        moved = get_chain(client, ki, entitled["id"])
        assert moved["template_version"] == 2 and moved["version"] == before[entitled["id"]]["version"] + 1
        assert states(moved) == {"first_interview": "completed", "entitlement": "completed", "buergergeld": "ready",
                                 "course": "ready", "placement": "planned"}
        assert step(moved, "buergergeld")["assigned_organisation_id"] == world.organisations["ennetal_jobcenter"]
        # The course deadline counts again from its anchor: 42 days after the entitlement.
        assert step(moved, "course")["due_at"] < step(before[entitled["id"]], "course")["due_at"]
        migration_time = next(e["occurred_at"] for e in events(client, ki, entitled["id"])
                              if e["kind"] == "template_migrated")
        timeline = [(e["kind"], e["step_key"], e["action"]) for e in events(client, ki, entitled["id"])
                    if e["occurred_at"] == migration_time]
        assert timeline == [("template_migrated", None, None), ("step_migrated", "health", "removed"),
                            ("step_migrated", "buergergeld", "added"), ("step_migrated", "placement", "renamed"),
                            ("step_migrated", "course", "changed"), ("step", "buergergeld", "make_ready")]
        renamed = next(e for e in events(client, ki, entitled["id"]) if e["action"] == "renamed")
        assert (renamed["step_key"], renamed["previous_step_key"]) == ("placement", "work")
        removed = next(e for e in events(client, ki, entitled["id"]) if e["action"] == "removed")
        assert removed["previous_organisation_id"] == world.organisations["ennetal_gesundheitsamt"]
        # The Gesundheitsamt's part ended with its step: it reads the history, no more.
        seen = get_chain(client, auth(*GA), entitled["id"])
        assert seen["access"] == "former"
        problem(client.post(f"/chains/{entitled['id']}/steps/health/actions", json={"action": "start"},
                            headers=auth(*GA)), 403, "involvement-ended")

        skipped = get_chain(client, ki, past["id"])
        assert step(skipped, "buergergeld")["state"] == "skipped"
        assert "der Bescheid lag vor" in step(skipped, "buergergeld")["reason"]
        # The renamed step keeps its row, its state and its office.
        assert step(skipped, "placement")["state"] == "in_progress"
        assert step(skipped, "placement")["assigned_organisation_id"] == world.organisations["ennetal_jobcenter"]
        # Where nobody had begun it, it waits again for the new step.
        again = get_chain(client, ki, waiting["id"])
        assert (step(again, "buergergeld")["state"], step(again, "placement")["state"]) == ("ready", "planned")
        assert step(again, "placement")["assigned_organisation_id"] is None
        assert get_chain(client, ki, examined["id"])["template_version"] == 1  # left as it was
        # The VHS's part in that chain ended before the migration: it reads the chain as it stood
        # then, in the version it had then.
        then = get_chain(client, auth(*VHS), waiting["id"])
        assert then["access"] == "former" and then["template_version"] == 1
        assert states(then) == {"first_interview": "completed", "entitlement": "completed", "health": "ready",
                                "course": "completed", "work": "ready"}

        # Migrated chains run on to their end like any other.
        jc, vhs = auth(*JC), auth(*VHS)
        walk(client, jc, entitled["id"], ("buergergeld", "start"), ("buergergeld", "complete"))
        walk(client, vhs, entitled["id"], ("course", "start"), ("course", "complete"))
        end = walk(client, jc, entitled["id"], ("placement", "start"), ("placement", "complete"))
        assert end["status"] == "completed"
        walk(client, ki, fresh["id"], ("first_interview", "start"), ("first_interview", "complete"))
        diff = ok(client.get(f"/templates/{key}/diff", params={"from": 1, "to": 2}, headers=ki))
        assert diff["renamed"] == {"work": "placement"} and [s["key"] for s in diff["added"]] == ["buergergeld"]
        listed = ok(client.get(f"/templates/{key}/versions", headers=ki))
        assert [v["version"] for v in listed] == [1, 2] and listed[1]["migration_plan_from_previous"]
        assert listed[1]["current"] and not listed[0]["current"]


def test_the_command_line_lists_a_dry_run_and_migrates(app_with, auth, world, clock, settings, tmp_path,
                                                      monkeypatch, capsys, session_factory):
    from conftest import MASTER_KEY, ROOT

    key = f"kurs_{uuid.uuid4().hex[:8]}"
    v1, v2, plan_text = versions(key)
    with client_for(app_with, {key: v1}) as client:
        chain = chain_in(client, auth, world, key, "Sechs")
    policy_dir = tmp_path / "policies"
    import shutil

    shutil.copytree(ROOT / "policies", policy_dir)
    (policy_dir / "chains" / f"{key}.yaml").write_text(yaml.safe_dump(v2.to_document(), allow_unicode=True),
                                                       encoding="utf-8")
    (policy_dir / "chains" / f"{key}.migrations.yaml").write_text(plan_text, encoding="utf-8")
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CASEMGMT_POLICY_DIR", str(policy_dir))
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(MASTER_KEY).decode())
    get_settings.cache_clear()
    try:
        assert main(["chains", "migrate", "--template", key, "--to", "2", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"{chain['id']}  v1 -> v2  would migrate: health removed" in out
        assert "1 chains would be migrated, 0 cannot be migrated" in out
        assert main(["chains", "migrate", "--template", key, "--to", "2", "--where", "jurisdiction=wittmar",
                     "--by", "ops.1"]) == 0
        assert "1 chains migrated" in capsys.readouterr().out
        assert main(["chains", "migrate", "--template", key, "--to", "2", "--where", "colour=blue"]) == 2
        assert "one of jurisdiction, chain" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
    with session_factory() as session:
        assert session.scalar(select(Chain.template_version).where(Chain.id == uuid.UUID(chain["id"]))) == 2
        actors = set(session.scalars(select(ChainEvent.actor_user).where(
            ChainEvent.chain_id == uuid.UUID(chain["id"]), ChainEvent.kind == "template_migrated")))
        assert actors == {"ops.1"}
