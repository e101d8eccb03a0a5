"""Figures on demand (GET /reports/on-demand), perturbed by the Cell Key Method: the same cell gets
the same noise in any table and however often it is asked; no count in 1..k-1 is ever shown;
the noise averages out to nothing; the record keys never leave the database."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from http_helpers import ok, problem
from hypothesis import given, settings
from hypothesis import strategies as st
from test_conferences_api import LG
from test_steering_report import Kreis, session  # noqa: F401  (the fixture)

from casemgmt.conferences.policy import load_steering_policy
from casemgmt.policy.source import PolicyError
from casemgmt.steering import cellkey

ROOT = Path(__file__).resolve().parents[1]
K = 5


def test_cell_key_is_the_sum_of_record_keys_modulo_one_in_any_order():
    keys = [0.75, 0.5, 0.125, 0.9]
    assert cellkey.cell_key(keys) == pytest.approx(0.275)
    rng = random.Random(1)
    many = [rng.random() for _ in range(200)]
    shuffled = many[:]
    rng.shuffle(shuffled)
    assert cellkey.cell_key(many) == cellkey.cell_key(shuffled)  # exactly, not approximately
    assert cellkey.cell_key([]) == 0.0


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 60), st.floats(0, 1, exclude_max=True))
def test_no_small_count_is_ever_published(policies, count, key):
    value = count + cellkey.noise(count, key, policies.steering.ptable)
    assert value == 0 or value >= policies.steering.k
    assert value >= 0


def test_every_row_of_the_ptable_is_unbiased(policies):
    for row in policies.steering.ptable:
        starts = [s for s, _ in row] + [1.0]
        assert sum((b - a) * n for (a, n), b in zip(row, starts[1:])) == pytest.approx(0)
    # Averaged over many cells of 3 persons, the published counts average 3.
    rng = random.Random(2)
    published = [3 + cellkey.noise(3, rng.random(), policies.steering.ptable) for _ in range(20_000)]
    assert sum(published) / len(published) == pytest.approx(3, abs=0.05)


def test_a_ptable_that_publishes_small_counts_or_is_biased_is_refused(tmp_path, policies):
    text = (ROOT / "policies" / "steering.yaml").read_text()
    bad_small = text.replace("- {count: 2, noise: [[0.0, -2], [0.6, 3]]}", "- {count: 2, noise: [[0.0, -1], [0.5, 1]]}")
    bad_bias = text.replace("- {count: 6, noise: [[0.0, -1], [0.25, 0], [0.75, 1]]}",
                            "- {count: 6, noise: [[0.0, -1], [0.25, 0], [0.5, 1]]}")
    for doc, message in ((bad_small, "would publish 1"), (bad_bias, "must average 0")):
        assert doc != text
        path = tmp_path / "steering.yaml"
        path.write_text(doc)
        with pytest.raises(PolicyError, match=message):
            load_steering_policy(ROOT / "policies" / "barriers.yaml", path, policies.data.purposes.keys(),
                                 policies.data.categories.keys())


def test_on_demand_figures_are_perturbed_consistently(client, auth, clock, session, catalog, privacy, policies,
                                                      world):
    kreis = Kreis(session, catalog, privacy, policies, world, random.Random(21))
    wittmar = kreis.add_persons(3, towns=["wittmar"], weights=[1], templates=["young_adult"])
    others = kreis.add_persons(9, towns=["hattenberg"], weights=[1], templates=["young_adult"])
    kreis.conference(datetime(2026, 2, 10, 9, tzinfo=UTC), wittmar + others, 2)
    clock.now = datetime(2026, 7, 1, 8, tzinfo=UTC)
    town = ok(client.get("/reports/on-demand", params={"jurisdiction_id": world.jurisdictions["wittmar"]},
                         headers=auth(*LG)))
    assert town["jurisdiction"]["title"] == "Wittmar" and "Cell-Key" in town["method"]["note"]
    cells = [c for t in town["tables"] for c in t["cells"]]
    assert cells and all(c["perturbed"] for c in cells)
    assert all(c["value"] == 0 or c["value"] >= K for c in cells), "a small count was published"
    discussed = next(t for t in town["tables"] if t["key"] == "conference_persons")["cells"]
    assert [c["quarter"] for c in discussed] == ["2026-Q1"] and discussed[0]["quarter_title"] == "1. Quartal 2026"
    # The true count is 3: what is shown is what the ptable gives for these three persons' keys.
    with session_factory_of(client)() as s:
        from casemgmt.persons.models import Person

        keys = [s.get(Person, c.person_id).record_key for c in wittmar]
    assert discussed[0]["value"] == 3 + cellkey.noise(3, cellkey.cell_key(keys), policies.steering.ptable)
    # Asked again, and for the quarter only: the same cell, the same noise.
    again = ok(client.get("/reports/on-demand", params={"jurisdiction_id": world.jurisdictions["wittmar"]},
                          headers=auth(*LG)))
    assert again["tables"] == town["tables"]
    quarter = ok(client.get("/reports/on-demand", params={"jurisdiction_id": world.jurisdictions["wittmar"],
                                                          "quarter": "2026Q1"}, headers=auth(*LG)))
    q_discussed = next(t for t in quarter["tables"] if t["key"] == "conference_persons")["cells"]
    assert q_discussed == discussed
    # The Kreis's figure is another cell (twelve persons) with its own noise; no record key and
    # no person id appears anywhere.
    kreis_doc = ok(client.get("/reports/on-demand", headers=auth(*LG)))
    assert kreis_doc["jurisdiction"]["key"] == "kreis_ennetal"
    text = str(town) + str(kreis_doc)
    assert "record_key" not in text and not any(str(c.person_id) in text for c in wittmar + others)
    assert not any(f"{k:.6f}"[2:] in text for k in keys)
    problem(client.get("/reports/on-demand", params={"quarter": "2026-5"}, headers=auth(*LG)), 422,
            "validation-error")
    problem(client.get("/reports/on-demand", params={"jurisdiction_id": world.jurisdictions["nrw"]
                                                     if "nrw" in world.jurisdictions else 1}, headers=auth(*LG)),
            422, "validation-error")
    problem(client.get("/reports/on-demand", headers=auth("ennetal_ki", "case_manager")), 403, "forbidden")


def session_factory_of(client):
    return client.app.state.sessionmaker
