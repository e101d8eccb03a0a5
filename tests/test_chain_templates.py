"""Chain templates: the shipped policy files, the validation of broken files, and graph properties.

Pure tests: no database, only files in ``policies/`` and in pytest's temporary directories.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemgmt.chains.spec import (
    CASE_MANAGEMENT_OWNER,
    CHAIN_STARTED,
    ChainTemplate,
    DueRule,
    load_template,
    load_templates,
)
from casemgmt.policy.source import PolicyError, load_yaml

ROOT = Path(__file__).resolve().parent.parent
CHAINS_DIR = ROOT / "policies" / "chains"
SHIPPED = {"refugee_recognised", "tolerated_family", "eu_newcomer", "uma", "young_adult"}


def _read_kinds() -> tuple[str, ...]:
    data = load_yaml(ROOT / "policies" / "organisation_kinds.yaml")
    return tuple(kind["key"] for kind in data["kinds"])


KINDS = _read_kinds()


@pytest.fixture(scope="module")
def shipped() -> dict[str, ChainTemplate]:
    return load_templates(CHAINS_DIR, KINDS)


def write(tmp_path: Path, text: str, name: str = "template.yaml") -> tuple[Path, str]:
    """Write a dedented template into ``tmp_path`` and return its path and text."""
    text = textwrap.dedent(text).lstrip("\n")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path, text


def line_with(text: str, fragment: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the ``occurrence``-th match of ``fragment``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(hits) >= occurrence, f"{fragment!r} not found {occurrence} times"
    return hits[occurrence - 1]


def topological(template: ChainTemplate) -> list[str]:
    """A topological order of the steps, or an AssertionError if there is a cycle."""
    done: list[str] = []
    pending = list(template.step_keys())
    while pending:
        ready = [k for k in pending if all(r in done for r in template.step(k).requires)]
        assert ready, f"cycle among {pending}"
        done.extend(ready)
        pending = [k for k in pending if k not in ready]
    return done


def ancestors(template: ChainTemplate, key: str) -> set[str]:
    found: set[str] = set()
    stack = list(template.step(key).requires)
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(template.step(current).requires)
    return found


# --------------------------------------------------------------------------------------------
# The shipped templates
# --------------------------------------------------------------------------------------------


def test_all_five_shipped_templates_load(shipped: dict[str, ChainTemplate]) -> None:
    assert set(shipped) == SHIPPED
    for key, template in shipped.items():
        assert template.key == key
        assert template.version == 1
        assert template.title and template.description
        assert Path(template.source).parent == CHAINS_DIR


@pytest.mark.parametrize("key", sorted(SHIPPED))
def test_shipped_template_shape(shipped: dict[str, ChainTemplate], key: str) -> None:
    template = shipped[key]
    assert 10 <= len(template.steps) <= 20
    assert template.roots()
    assert sorted(topological(template)) == sorted(template.step_keys())
    assert any(step.optional for step in template.steps)
    assert any(step.due is not None for step in template.steps)
    assert any(len(step.requires) > 1 for step in template.steps), "expected at least one join"
    for step in template.steps:
        assert step.owner in KINDS or step.owner == CASE_MANAGEMENT_OWNER
        if step.due is not None and step.due.anchor != CHAIN_STARTED:
            assert step.due.anchor in ancestors(template, step.key)


@pytest.mark.parametrize("key", sorted(SHIPPED))
def test_shipped_template_round_trip(shipped: dict[str, ChainTemplate], key: str) -> None:
    template = shipped[key]
    again = ChainTemplate.from_document(template.to_document(), organisation_kinds=KINDS)
    assert again.digest() == template.digest()
    assert again.steps == template.steps
    assert again.source == "<database>"
    # The document is plain JSON data, so it survives a trip through a JSON column.
    assert json.loads(json.dumps(template.to_document())) == template.to_document()


def test_refugee_chain_models_the_rechtskreiswechsel_and_course_goal(
    shipped: dict[str, ChainTemplate],
) -> None:
    template = shipped["refugee_recognised"]
    assert template.step("sgb2_application").owner == "jobcenter"
    assert "residence_permit" in template.step("sgb2_application").requires
    assert template.step("asylblg_ended").owner == "sozialamt"
    assert "sgb2_application" in template.step("asylblg_ended").requires
    assert template.step("integration_course").due == DueRule(
        anchor="integration_course_entitlement", anchor_event="completed", days=56, deadline_for="start"
    )


# --------------------------------------------------------------------------------------------
# Accessors, defaults and the canonical document
# --------------------------------------------------------------------------------------------

SMALL = """
    key: small
    version: 2
    title: Kleine Kette
    description: >
      Zwei Zweige,
      ein Zusammenschluss.
    steps:
      - key: a
        title: A
        owner: case_management
        due:
          after: chain_started
          days: 7
      - key: b
        title: B
        owner: sozialamt
        requires: [a]
        due:
          after: a
          days: 3
      - key: c
        title: C
        owner: jobcenter
        requires: [a]
        optional: true
        description: "  Beschreibung  "
        due:
          after: a
          on: started
          days: 10
          for: start
      - key: d
        title: D
        owner: bamf
        requires: [b, c]
        due:
          after: a
          days: 30
"""


def test_accessors_and_defaults(tmp_path: Path) -> None:
    path, _ = write(tmp_path, SMALL)
    template = load_template(path, KINDS)
    assert template.source == str(path)
    assert template.description == "Zwei Zweige, ein Zusammenschluss."
    assert template.step_keys() == ("a", "b", "c", "d")
    assert template.roots() == ("a",)
    assert template.dependants("a") == ("b", "c")
    assert template.dependants("d") == ()
    assert [s.key for s in template.rules_anchored_on("a")] == ["b", "c", "d"]
    assert [s.key for s in template.rules_anchored_on(CHAIN_STARTED)] == ["a"]
    assert template.rules_anchored_on("d") == ()

    a, b, c, d = template.steps
    assert a.due == DueRule("chain_started", "started", 7, "completion")
    assert b.due == DueRule("a", "completed", 3, "completion")
    assert c.due == DueRule("a", "started", 10, "start")
    assert (b.requires, b.optional, b.description) == (("a",), False, "")
    assert (c.optional, c.description) == (True, "Beschreibung")
    assert d.due is not None and d.due.anchor == "a"  # a transitive prerequisite is enough

    with pytest.raises(KeyError):
        template.step("nope")
    with pytest.raises(KeyError):
        template.dependants("nope")
    with pytest.raises(KeyError):
        template.rules_anchored_on("nope")


def test_document_is_canonical_and_digest_tracks_content(tmp_path: Path) -> None:
    path, _ = write(tmp_path, SMALL)
    template = load_template(path, KINDS)
    doc = template.to_document()
    assert set(doc) == {"key", "version", "title", "description", "steps"}
    assert doc["steps"][0] == {
        "key": "a",
        "title": "A",
        "owner": "case_management",
        "requires": [],
        "optional": False,
        "description": "",
        "due": {"after": "chain_started", "on": "started", "days": 7, "for": "completion"},
    }
    assert doc["steps"][1]["due"]["on"] == "completed"

    again = ChainTemplate.from_document(doc, source="db:small:2")
    assert again == ChainTemplate.from_document(doc, source="db:small:2")
    assert again.digest() == template.digest()
    assert again.source == "db:small:2"
    assert len(template.digest()) == 64

    bumped = dict(doc, version=3)
    assert ChainTemplate.from_document(bumped).digest() != template.digest()


def test_from_document_revalidates() -> None:
    doc: dict[str, Any] = {
        "key": "stored",
        "version": 1,
        "title": "Gespeichert",
        "description": "",
        "steps": [
            {"key": "a", "title": "A", "owner": "retired_kind", "requires": ["b"], "optional": False,
             "description": "", "due": None},
            {"key": "b", "title": "B", "owner": "sozialamt", "requires": ["a"], "optional": False,
             "description": "", "due": None},
        ],
    }
    with pytest.raises(PolicyError) as info:
        ChainTemplate.from_document(doc)
    assert info.value.path == "<database>"
    assert info.value.line is None
    assert info.value.field == "steps"

    doc["steps"][1]["requires"] = []
    # An owner kind removed since the template was stored does not make it unreadable ...
    assert ChainTemplate.from_document(doc).step("a").owner == "retired_kind"
    # ... but it is refused when the caller asks for the check.
    with pytest.raises(PolicyError) as info:
        ChainTemplate.from_document(doc, organisation_kinds=KINDS)
    assert info.value.field == "steps[0].owner"


# --------------------------------------------------------------------------------------------
# Validation errors: file, line, field and a helpful message
# --------------------------------------------------------------------------------------------

HEADER = """
    key: broken
    version: 1
    title: Kaputt
    steps:
"""

# (id, YAML body under "steps:", expected field, fragment on the reported line, message parts)
STEP_ERRORS: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    (
        "unknown step field",
        """
          - key: a
            title: A
            owner: sozialamt
            colour: red
        """,
        "steps[0].colour",
        "colour: red",
        ("Extra inputs are not permitted",),
    ),
    (
        "missing title",
        """
          - key: a
            owner: sozialamt
        """,
        "steps[0].title",
        "- key: a",
        ("Field required",),
    ),
    (
        "empty title",
        """
          - key: a
            title: "  "
            owner: sozialamt
        """,
        "steps[0].title",
        'title: "  "',
        ("at least 1 character",),
    ),
    (
        "bad step key",
        """
          - key: Step-A
            title: A
            owner: sozialamt
        """,
        "steps[0].key",
        "key: Step-A",
        ("'Step-A' is not a valid key", "snake_case"),
    ),
    (
        "optional is not a boolean",
        """
          - key: a
            title: A
            owner: sozialamt
            optional: maybe
        """,
        "steps[0].optional",
        "optional: maybe",
        ("valid boolean",),
    ),
    (
        "requires is not a list",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires: a
        """,
        "steps[1].requires",
        "requires: a",
        ("valid list",),
    ),
    (
        "duplicate step key",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: a  # the same key again
            title: A again
            owner: jobcenter
        """,
        "steps[1].key",
        "the same key again",
        ("duplicate step key 'a'", "steps[0]"),
    ),
    (
        "reserved step key",
        """
          - key: chain_started
            title: Start
            owner: sozialamt
        """,
        "steps[0].key",
        "key: chain_started",
        ("reserved",),
    ),
    (
        "unknown owner",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: finanzamt
            requires: [a]
        """,
        "steps[1].owner",
        "owner: finanzamt",
        ("unknown organisation kind 'finanzamt'", "jobcenter", "sozialamt", "case_management"),
    ),
    (
        "missing prerequisite",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires:
              - a
              - ghost
        """,
        "steps[1].requires[1]",
        "- ghost",
        ("'ghost' is not a step of this template",),
    ),
    (
        "prerequisite on itself",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires: [b]
        """,
        "steps[1].requires[0]",
        "requires: [b]",
        ("cannot require itself",),
    ),
    (
        "prerequisite listed twice",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires: [a, a]
        """,
        "steps[1].requires[1]",
        "requires: [a, a]",
        ("listed twice",),
    ),
    (
        "cycle",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires: [a, c]
          - key: c
            title: C
            owner: sozialamt
            requires: [b]
          - key: d
            title: D
            owner: sozialamt
            requires: [c]
        """,
        "steps[1].requires",
        "requires: [a, c]",
        ("prerequisite cycle b -> c -> b", "never become ready: b, c, d"),
    ),
    (
        "cycle reported at its first step even when a blocked step comes earlier",
        """
          - key: root
            title: Root
            owner: sozialamt
          - key: downstream
            title: Downstream
            owner: sozialamt
            requires: [y]
          - key: x
            title: X
            owner: sozialamt
            requires: [root, z]
          - key: y
            title: Y
            owner: sozialamt
            requires: [x]
          - key: z
            title: Z
            owner: sozialamt
            requires: [y]
        """,
        "steps[2].requires",
        "requires: [root, z]",
        ("prerequisite cycle x -> z -> y -> x", "downstream, x, y, z"),
    ),
    (
        "no root step",
        """
          - key: a
            title: A
            owner: sozialamt
            requires: [b]
          - key: b
            title: B
            owner: sozialamt
            requires: [a]
        """,
        "steps",
        "steps:",
        ("no step without prerequisites", "could never start"),
    ),
    (
        "unknown due field",
        """
          - key: a
            title: A
            owner: sozialamt
            due:
              after: chain_started
              days: 3
              colour: red
        """,
        "steps[0].due.colour",
        "colour: red",
        ("Extra inputs are not permitted",),
    ),
    (
        "due anchor missing",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires: [a]
            due:
              after: ghost
              days: 3
        """,
        "steps[1].due.after",
        "after: ghost",
        ("'ghost' is neither 'chain_started' nor a step",),
    ),
    (
        "due anchor on the step itself",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires: [a]
            due:
              after: b
              days: 3
        """,
        "steps[1].due.after",
        "after: b",
        ("cannot be anchored on the step itself",),
    ),
    (
        "chain start cannot be completed",
        """
          - key: a
            title: A
            owner: sozialamt
            due:
              after: chain_started
              on: completed
              days: 3
        """,
        "steps[0].due.on",
        "on: completed",
        ("can only be 'started'",),
    ),
    (
        "due on given twice",
        """
          - key: a
            title: A
            owner: sozialamt
            due:
              after: chain_started
              on: started
              "on": started
              days: 3
        """,
        "steps[0].due.on",
        '"on": started',
        ("given twice",),
    ),
    (
        "due on unknown event",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires: [a]
            due:
              after: a
              on: finished
              days: 3
        """,
        "steps[1].due.on",
        "on: finished",
        ("'started' or 'completed'",),
    ),
    (
        "due for unknown target",
        """
          - key: a
            title: A
            owner: sozialamt
            due:
              after: chain_started
              days: 3
              for: end
        """,
        "steps[0].due.for",
        "for: end",
        ("'start' or 'completion'",),
    ),
    (
        "due days zero",
        """
          - key: a
            title: A
            owner: sozialamt
            due:
              after: chain_started
              days: 0
        """,
        "steps[0].due.days",
        "days: 0",
        ("greater than or equal to 1",),
    ),
    (
        "due days too many",
        """
          - key: a
            title: A
            owner: sozialamt
            due:
              after: chain_started
              days: 3651
        """,
        "steps[0].due.days",
        "days: 3651",
        ("less than or equal to 3650",),
    ),
    (
        "due days not an integer",
        """
          - key: a
            title: A
            owner: sozialamt
            due:
              after: chain_started
              days: 5.5
        """,
        "steps[0].due.days",
        "days: 5.5",
        ("valid integer",),
    ),
    (
        "due anchor on a parallel branch",
        """
          - key: a
            title: A
            owner: sozialamt
          - key: b
            title: B
            owner: sozialamt
            requires: [a]
          - key: c
            title: C
            owner: sozialamt
            requires: [a]
            due:
              after: b
              days: 3
        """,
        "steps[2].due.after",
        "after: b",
        ("due rule anchor 'b' is not a prerequisite of this step", "may never start before"),
    ),
    (
        "due anchor downstream",
        """
          - key: a
            title: A
            owner: sozialamt
            due:
              after: b
              on: started
              days: 3
          - key: b
            title: B
            owner: sozialamt
            requires: [a]
        """,
        "steps[0].due.after",
        "after: b",
        ("not a prerequisite of this step",),
    ),
]


@pytest.mark.parametrize(
    ("body", "field", "fragment", "message_parts"),
    [pytest.param(*case[1:], id=case[0]) for case in STEP_ERRORS],
)
def test_step_validation_errors(
    tmp_path: Path, body: str, field: str, fragment: str, message_parts: tuple[str, ...]
) -> None:
    path, text = write(tmp_path, textwrap.dedent(HEADER) + textwrap.dedent(body).lstrip("\n"))
    with pytest.raises(PolicyError) as info:
        load_template(path, KINDS)
    err = info.value
    assert err.path == str(path)
    assert err.field == field
    assert err.line == line_with(text, fragment)
    for part in message_parts:
        assert part in err.message
    assert f"{path}:{err.line}: {field}:" in str(err)


@pytest.mark.parametrize(
    ("text", "field", "fragment", "message_part"),
    [
        pytest.param(
            "key: t\nversion: 1\ntitle: T\ncolour: red\nsteps:\n  - {key: a, title: A, owner: bamf}\n",
            "colour", "colour: red", "Extra inputs are not permitted", id="unknown top-level field",
        ),
        pytest.param(
            "key: Bad Key\nversion: 1\ntitle: T\nsteps: []\n",
            "key", "key: Bad Key", "snake_case", id="bad template key",
        ),
        pytest.param(
            "key: t\nversion: 0\ntitle: T\nsteps: []\n",
            "version", "version: 0", "greater than or equal to 1", id="version zero",
        ),
        pytest.param(
            "key: t\nversion: '1'\ntitle: T\nsteps: []\n",
            "version", "version: '1'", "valid integer", id="version as string",
        ),
        pytest.param(
            "key: t\nversion: 1\ntitle: T\nsteps: []\n",
            "steps", "steps: []", "at least 1 item", id="no steps",
        ),
        pytest.param(
            "key: t\nversion: 1\nsteps:\n  - key: a\n    title: A\n    owner: sozialamt\n",
            "title", "key: t", "Field required", id="missing template title",
        ),
        pytest.param(
            "- key: t\n", "", "- key: t", "valid dictionary", id="not a mapping",
        ),
    ],
)
def test_template_validation_errors(
    tmp_path: Path, text: str, field: str, fragment: str, message_part: str
) -> None:
    path, text = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_template(path, KINDS)
    assert info.value.field == field
    assert info.value.line == line_with(text, fragment)
    assert message_part in info.value.message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path, text = write(
        tmp_path,
        """
        key: t
        version: 1
        title: T
        steps:
          - key: a
            title: [unclosed
            owner: sozialamt
        """,
    )
    with pytest.raises(PolicyError) as info:
        load_template(path, KINDS)
    assert info.value.line is not None
    assert line_with(text, "title: [unclosed") <= info.value.line <= len(text.splitlines()) + 1
    assert "invalid YAML" in info.value.message


def test_duplicate_yaml_key_names_the_line(tmp_path: Path) -> None:
    path, text = write(
        tmp_path,
        """
        key: t
        version: 1
        title: T
        title: again
        steps: []
        """,
    )
    with pytest.raises(PolicyError) as info:
        load_template(path, KINDS)
    assert info.value.line == line_with(text, "title: again")


# --------------------------------------------------------------------------------------------
# Loading a directory
# --------------------------------------------------------------------------------------------

MINIMAL = """
    key: {key}
    version: 1
    title: T
    steps:
      - key: a
        title: A
        owner: sozialamt
"""


def test_load_templates_refuses_duplicate_template_keys(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.format(key="same"), "a_first.yaml")
    second, text = write(tmp_path, MINIMAL.format(key="same"), "b_second.yaml")
    write(tmp_path, MINIMAL.format(key="other"), "c_other.yaml")
    with pytest.raises(PolicyError) as info:
        load_templates(tmp_path, KINDS)
    assert info.value.path == str(second)
    assert info.value.field == "key"
    assert info.value.line == line_with(text, "key: same")
    assert "a_first.yaml" in info.value.message


def test_load_templates_reads_only_yaml_files(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.format(key="one"), "one.yaml")
    write(tmp_path, MINIMAL.format(key="two"), "two.yaml")
    (tmp_path / "notes.txt").write_text("not a template", encoding="utf-8")
    assert set(load_templates(tmp_path, KINDS)) == {"one", "two"}


def test_load_templates_refuses_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_templates(tmp_path, KINDS)
    assert info.value.path == str(tmp_path)
    assert "no chain templates" in info.value.message
    with pytest.raises(PolicyError):
        load_templates(tmp_path / "missing", KINDS)


def test_a_broken_file_stops_the_directory_load(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.format(key="good"), "good.yaml")
    bad, _ = write(tmp_path, MINIMAL.format(key="bad").replace("sozialamt", "nowhere"), "bad.yaml")
    with pytest.raises(PolicyError) as info:
        load_templates(tmp_path, KINDS)
    assert info.value.path == str(bad)
    assert info.value.field == "steps[0].owner"


# --------------------------------------------------------------------------------------------
# Properties: any DAG loads, any back-edge that closes a cycle is refused
# --------------------------------------------------------------------------------------------


@st.composite
def dag_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A template document whose prerequisites point only at earlier steps (hence a DAG)."""
    count = draw(st.integers(min_value=1, max_value=14))
    steps: list[dict[str, Any]] = []
    for i in range(count):
        requires = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        step: dict[str, Any] = {
            "key": f"s{i}",
            "title": f"Schritt {i}",
            "owner": draw(st.sampled_from((*KINDS, CASE_MANAGEMENT_OWNER))),
            "requires": [f"s{r}" for r in requires],
        }
        if draw(st.booleans()):
            step["optional"] = True
        anchors = [CHAIN_STARTED, *step["requires"]]
        if draw(st.booleans()):
            anchor = draw(st.sampled_from(anchors))
            step["due"] = {"after": anchor, "days": draw(st.integers(1, 3650))}
            if anchor != CHAIN_STARTED:
                step["due"]["on"] = draw(st.sampled_from(("started", "completed")))
            step["due"]["for"] = draw(st.sampled_from(("start", "completion")))
        steps.append(step)
    # Shuffle the file order: the DAG property must not depend on prerequisites coming first.
    order = draw(st.permutations(range(count)))
    return {"key": "random", "version": 1, "title": "Zufall", "steps": [steps[i] for i in order]}


def _iter_ancestors(steps: dict[str, list[str]], key: str) -> Iterator[str]:
    seen: set[str] = set()
    stack = list(steps[key])
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            yield current
            stack.extend(steps[current])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=dag_documents())
def test_random_dags_always_load(doc: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("dag") / "random.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    template = load_template(path, KINDS)
    assert template.roots()
    assert sorted(topological(template)) == sorted(template.step_keys())
    for step in template.steps:
        for required in step.requires:
            assert step.key in template.dependants(required)
    assert ChainTemplate.from_document(template.to_document()).digest() == template.digest()


@settings(max_examples=150, deadline=None)
@given(doc=dag_documents(), data=st.data())
def test_a_back_edge_closing_a_cycle_is_refused(doc: dict[str, Any], data: st.DataObject) -> None:
    requires = {step["key"]: list(step["requires"]) for step in doc["steps"]}
    candidates = [(key, anc) for key in requires for anc in sorted(_iter_ancestors(requires, key))]
    if not candidates:
        doc["steps"].append({"key": "extra", "title": "Extra", "owner": "sozialamt",
                             "requires": [doc["steps"][0]["key"]]})
        requires["extra"] = [doc["steps"][0]["key"]]
        candidates = [("extra", doc["steps"][0]["key"])]
    descendant, ancestor = data.draw(st.sampled_from(candidates))
    for step in doc["steps"]:
        if step["key"] == ancestor:
            step["requires"].append(descendant)
            requires[ancestor].append(descendant)

    with pytest.raises(PolicyError) as info:
        ChainTemplate.from_document(doc, organisation_kinds=KINDS)
    err = info.value
    if err.field == "steps":
        assert "no step without prerequisites" in err.message
        return
    assert re.fullmatch(r"steps\[\d+\]\.requires", err.field)
    match = re.search(r"prerequisite cycle (\S+(?: -> \S+)+) ", err.message)
    assert match, err.message
    cycle = match.group(1).split(" -> ")
    assert cycle[0] == cycle[-1]
    for step_key, required in itertools.pairwise(cycle):
        assert required in requires[step_key]
    # Reported at the first step of any cycle in file order.
    index = int(re.findall(r"\d+", err.field)[0])
    assert doc["steps"][index]["key"] == cycle[0]
    on_cycle = {k for k in requires if k in set(_iter_ancestors(requires, k))}
    first_on_cycle = next(s["key"] for s in doc["steps"] if s["key"] in on_cycle)
    assert cycle[0] == first_on_cycle
