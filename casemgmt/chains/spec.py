"""Chain templates (Integrationsketten): the declarative file format and its validated spec.

A chain template describes the steps of one kind of Integrationskette (DOMAIN.md section 5): who
owns each step, which steps must be finished before it, and by when it is due. Templates are
operator policy files under ``policies/chains/``; a running chain keeps the template version it
started with, which is why a template can be turned into a canonical document
(:meth:`ChainTemplate.to_document`) and fingerprinted (:meth:`ChainTemplate.digest`).

This module is pure: apart from reading the template files it does no I/O.

File format (one template per ``*.yaml`` file)::

    key: refugee_recognised          # snake_case, unique across all templates
    version: 1                       # integer >= 1; bump it whenever the steps change
    title: Geflüchtete mit Anerkennung
    description: >                   # optional, default ""
      Free text for case managers.
    steps:                           # at least one; file order is the display order
      - key: arrival_assignment      # snake_case, unique within the template; "agreed_..." is
                                     #   reserved for steps a Fallkonferenz adds to one chain
        title: Ankunft und Zuweisung # German title as used in the field
        owner: sozialamt             # an organisation kind key, or "case_management"
        requires: []                 # optional, default []: prerequisite step keys; a step is
                                     #   ready once each of them is completed or skipped
        optional: false              # optional, default false: an optional step may be skipped
        description: ...             # optional, default ""
        due:                         # optional: a deadline for this step
          after: chain_started       # "chain_started" or the key of a (transitive) prerequisite
          on: started                # started | completed; default completed; for
                                     #   chain_started it must be omitted or "started"
          days: 28                   # calendar days, 1..3650
          for: completion            # start | completion; default completion: whether the
                                     #   deadline is for this step to start or to be completed

Every problem is reported as a :class:`~casemgmt.policy.source.PolicyError` naming the file, the
line and the field path (``steps[4].owner``), so that operators can fix templates without reading
code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from casemgmt.policy.source import (
    LineDict,
    PolicyError,
    format_loc,
    line_of,
    load_yaml,
    validate,
)

__all__ = [
    "AGREED_STEP_PREFIX",
    "CASE_MANAGEMENT_OWNER",
    "CHAIN_STARTED",
    "MAX_DUE_DAYS",
    "MIN_DUE_DAYS",
    "AnchorEvent",
    "ChainTemplate",
    "DeadlineFor",
    "DueRule",
    "StepSpec",
    "load_template",
    "load_templates",
]

CASE_MANAGEMENT_OWNER = "case_management"
"""Reserved owner: the organisation that runs the case management of this particular chain."""

CHAIN_STARTED = "chain_started"
"""Reserved due-rule anchor: the moment the chain itself was started."""

AGREED_STEP_PREFIX = "agreed_"
"""Reserved for the keys of steps a Fallkonferenz adds to one chain (``agreed_1``, ...), so that
no template version, now or later, can take a key a running chain already uses."""

MIGRATIONS_SUFFIX = ".migrations.yaml"
"""Files ``<key>.migrations.yaml`` next to the templates hold migration plans, not templates."""

MIN_DUE_DAYS = 1
MAX_DUE_DAYS = 3650

AnchorEvent = Literal["started", "completed"]
DeadlineFor = Literal["start", "completion"]

_KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
_KEY_MAX_LENGTH = 64


# --------------------------------------------------------------------------------------------
# The validated, immutable spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueRule:
    """When a step is due: ``days`` calendar days after an anchor event.

    ``anchor`` is :data:`CHAIN_STARTED` or the key of a step that is a (transitive) prerequisite
    of the step carrying the rule; ``anchor_event`` says whether the clock starts when the anchor
    step is started or completed (always ``"started"`` for :data:`CHAIN_STARTED`).
    ``deadline_for`` says whether the step must have *started* or be *completed* by then.
    """

    anchor: str
    anchor_event: AnchorEvent
    days: int
    deadline_for: DeadlineFor


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a chain template (a link of the Integrationskette).

    ``owner`` is an organisation kind key or :data:`CASE_MANAGEMENT_OWNER`; ``requires`` lists
    the prerequisite steps, each of which must be completed or skipped before this step is ready.
    """

    key: str
    title: str
    owner: str
    requires: tuple[str, ...]
    optional: bool
    due: DueRule | None
    description: str


@dataclass(frozen=True)
class ChainTemplate:
    """A validated chain template of one chain kind, in one version.

    Instances built by :func:`load_template` or :meth:`from_document` are guaranteed to be
    well formed: unique step keys, known prerequisites, no prerequisite cycles, at least one root
    step, and due rules anchored on the chain start or on an ancestor of their step.
    """

    key: str
    version: int
    title: str
    description: str
    steps: tuple[StepSpec, ...]
    source: str
    # Lookup tables derived from ``steps``; kept out of equality and hashing so that two
    # templates compare by content only.
    _by_key: Mapping[str, StepSpec] = field(init=False, repr=False, compare=False)
    _dependants: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _anchored: Mapping[str, tuple[StepSpec, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key = {step.key: step for step in self.steps}
        dependants: dict[str, list[str]] = {step.key: [] for step in self.steps}
        anchored: dict[str, list[StepSpec]] = {CHAIN_STARTED: []}
        anchored.update((step.key, []) for step in self.steps)
        for step in self.steps:
            for required in step.requires:
                dependants.setdefault(required, []).append(step.key)
            if step.due is not None:
                anchored.setdefault(step.due.anchor, []).append(step)
        object.__setattr__(self, "_by_key", by_key)
        object.__setattr__(self, "_dependants", {k: tuple(v) for k, v in dependants.items()})
        object.__setattr__(self, "_anchored", {k: tuple(v) for k, v in anchored.items()})

    def step(self, key: str) -> StepSpec:
        """The step with this key; ``KeyError`` if the template has none."""
        return self._by_key[key]

    def step_keys(self) -> tuple[str, ...]:
        """All step keys in file order."""
        return tuple(step.key for step in self.steps)

    def dependants(self, key: str) -> tuple[str, ...]:
        """Keys of the steps that list ``key`` as a prerequisite, in file order.

        Raises ``KeyError`` for an unknown step key.
        """
        if key not in self._by_key:
            raise KeyError(key)
        return self._dependants.get(key, ())

    def roots(self) -> tuple[str, ...]:
        """Keys of the steps without prerequisites: ready as soon as the chain starts."""
        return tuple(step.key for step in self.steps if not step.requires)

    def rules_anchored_on(self, key: str) -> tuple[StepSpec, ...]:
        """Steps whose due rule starts its clock on ``key`` (a step key or ``chain_started``).

        Raises ``KeyError`` for an unknown step key.
        """
        if key != CHAIN_STARTED and key not in self._by_key:
            raise KeyError(key)
        return self._anchored.get(key, ())

    def with_steps(self, extra: Sequence[StepSpec]) -> ChainTemplate:
        """This version with steps added to one chain (agreed in a Fallkonferenz) after its own:
        the engine then treats them like any other step. Key and version stay, so the chain
        keeps its shared state machine; the added steps are not part of the spec."""
        if not extra:
            return self
        return ChainTemplate(key=self.key, version=self.version, title=self.title,
                             description=self.description, steps=self.steps + tuple(extra),
                             source=self.source)

    def to_document(self) -> dict[str, Any]:
        """A canonical, JSON-serialisable document of the template (without ``source``).

        The document uses the field names of the file format with every default spelled out, so
        :meth:`from_document` reads it back through the same validation as a file.
        """
        return {
            "key": self.key,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "steps": [_step_document(step) for step in self.steps],
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_document`; identifies the content."""
        canonical = json.dumps(self.to_document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @classmethod
    def from_document(
        cls,
        doc: dict[str, Any],
        source: str = "<database>",
        organisation_kinds: Collection[str] | None = None,
    ) -> ChainTemplate:
        """Rebuild a template from :meth:`to_document` output, validating it again.

        Owners are checked against ``organisation_kinds`` only when it is given: a stored template
        version must stay readable after operators have changed the list of kinds.
        """
        return _build(doc, source, organisation_kinds)


def _step_document(step: StepSpec) -> dict[str, Any]:
    due = None
    if step.due is not None:
        due = {
            "after": step.due.anchor,
            "on": step.due.anchor_event,
            "days": step.due.days,
            "for": step.due.deadline_for,
        }
    return {
        "key": step.key,
        "title": step.title,
        "owner": step.owner,
        "requires": list(step.requires),
        "optional": step.optional,
        "description": step.description,
        "due": due,
    }


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_template(path: Path, organisation_kinds: Collection[str]) -> ChainTemplate:
    """Read and validate one template file; any problem raises :class:`PolicyError`."""
    return _build(load_yaml(path), str(path), organisation_kinds)


def load_templates(directory: Path, organisation_kinds: Collection[str]) -> dict[str, ChainTemplate]:
    """Read every ``*.yaml`` template in ``directory``, keyed by template key.

    Files are read in name order, so when two files declare the same key the error names the
    later one. An empty directory is an error: a deployment without chain templates is broken.
    """
    if not directory.is_dir():
        raise PolicyError(directory, None, "", "chain template directory does not exist")
    files = sorted(p for p in directory.glob("*.yaml")
                   if p.is_file() and not p.name.endswith(MIGRATIONS_SUFFIX))
    if not files:
        raise PolicyError(directory, None, "", "no chain templates (*.yaml) in this directory")
    kinds = frozenset(organisation_kinds)
    templates: dict[str, ChainTemplate] = {}
    for path in files:
        raw = load_yaml(path)
        template = _build(raw, str(path), kinds)
        first = templates.get(template.key)
        if first is not None:
            raise PolicyError(
                path,
                line_of(raw, ["key"]),
                "key",
                f"template key {template.key!r} is already used by {first.source}",
            )
        templates[template.key] = template
    return templates


# --------------------------------------------------------------------------------------------
# Structure: pydantic models of the file format
# --------------------------------------------------------------------------------------------


def _check_key(value: str) -> str:
    if not _KEY_PATTERN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid key: use snake_case "
            "(a lowercase letter, then lowercase letters, digits or underscores)"
        )
    if len(value) > _KEY_MAX_LENGTH:
        raise ValueError(f"key is longer than {_KEY_MAX_LENGTH} characters")
    return value


_Key = Annotated[str, AfterValidator(_check_key)]
_Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_Text = Annotated[str, StringConstraints(strip_whitespace=True)]


class _Model(BaseModel):
    # Strict: YAML happily turns "yes" into a bool or 56.0 into a float; a template should say
    # exactly what it means rather than rely on coercion.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _DueModel(_Model):
    after: _Key
    on: AnchorEvent | None = None
    days: int = Field(ge=MIN_DUE_DAYS, le=MAX_DUE_DAYS)
    for_: DeadlineFor = Field(default="completion", alias="for")


class _StepModel(_Model):
    key: _Key
    title: _Title
    owner: _Key
    requires: list[_Key] = Field(default_factory=list)
    optional: bool = False
    description: _Text = ""
    due: _DueModel | None = None


class _TemplateModel(_Model):
    key: _Key
    version: int = Field(ge=1)
    title: _Title
    description: _Text = ""
    steps: list[_StepModel] = Field(min_length=1)


# --------------------------------------------------------------------------------------------
# Semantics: references, graph shape, due rules
# --------------------------------------------------------------------------------------------


class _Reporter:
    """Turns a location in the raw data into a :class:`PolicyError` with file and line."""

    def __init__(self, raw: Any, source: str) -> None:
        self.raw = raw
        self.source = source

    def fail(self, loc: Sequence[str | int], message: str) -> NoReturn:
        raise PolicyError(self.source, line_of(self.raw, loc), format_loc(loc), message)


def _restore_on_keys(raw: Any, report: _Reporter) -> None:
    """Give ``due.on`` its name back where YAML 1.1 read the bare key ``on`` as ``True``.

    Only :class:`LineDict` values (fresh from :func:`load_yaml`) are touched, so documents
    passed in by callers are never mutated.
    """
    if not isinstance(raw, Mapping) or not isinstance(raw.get("steps"), list):
        return
    for index, step in enumerate(raw["steps"]):
        due = step.get("due") if isinstance(step, Mapping) else None
        if not isinstance(due, LineDict) or not any(k is True for k in due):
            continue
        if "on" in due:
            report.fail(["steps", index, "due", "on"], "key 'on' is given twice")
        due["on"] = due.pop(True)
        due.key_lines["on"] = due.key_lines.pop(True)


def _build(raw: Any, source: str, organisation_kinds: Collection[str] | None) -> ChainTemplate:
    report = _Reporter(raw, source)
    _restore_on_keys(raw, report)
    model = cast(_TemplateModel, validate(_TemplateModel, raw, Path(source)))
    steps = model.steps

    index_of = _check_step_keys(steps, report)
    for i, step in enumerate(steps):
        _check_owner(i, step, organisation_kinds, report)
        _check_requires(i, step, index_of, report)
        _check_due_reference(i, step, index_of, report)
    order = _check_graph(steps, index_of, report)
    _check_due_anchors(steps, order, report)

    return ChainTemplate(
        key=model.key,
        version=model.version,
        title=model.title,
        description=model.description,
        steps=tuple(_step_spec(step) for step in steps),
        source=source,
    )


def _step_spec(step: _StepModel) -> StepSpec:
    due = None
    if step.due is not None:
        default_event: AnchorEvent = "started" if step.due.after == CHAIN_STARTED else "completed"
        due = DueRule(
            anchor=step.due.after,
            anchor_event=step.due.on or default_event,
            days=step.due.days,
            deadline_for=step.due.for_,
        )
    return StepSpec(
        key=step.key,
        title=step.title,
        owner=step.owner,
        requires=tuple(step.requires),
        optional=step.optional,
        due=due,
        description=step.description,
    )


def _check_step_keys(steps: Sequence[_StepModel], report: _Reporter) -> dict[str, int]:
    index_of: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.key == CHAIN_STARTED:
            report.fail(
                ["steps", i, "key"],
                f"{CHAIN_STARTED!r} is reserved for due rules counted from the start of the chain",
            )
        if step.key.startswith(AGREED_STEP_PREFIX):
            report.fail(
                ["steps", i, "key"],
                f"keys starting with {AGREED_STEP_PREFIX!r} are reserved for steps agreed in a "
                "Fallkonferenz",
            )
        if step.key in index_of:
            report.fail(
                ["steps", i, "key"],
                f"duplicate step key {step.key!r} (already used by steps[{index_of[step.key]}])",
            )
        index_of[step.key] = i
    return index_of


def _check_owner(
    i: int, step: _StepModel, organisation_kinds: Collection[str] | None, report: _Reporter
) -> None:
    if organisation_kinds is None or step.owner == CASE_MANAGEMENT_OWNER:
        return
    if step.owner not in organisation_kinds:
        known = ", ".join(sorted(organisation_kinds)) or "(none)"
        report.fail(
            ["steps", i, "owner"],
            f"unknown organisation kind {step.owner!r}; known kinds: {known}; "
            f"or {CASE_MANAGEMENT_OWNER!r} for the chain's own case management",
        )


def _check_requires(i: int, step: _StepModel, index_of: Mapping[str, int], report: _Reporter) -> None:
    seen: set[str] = set()
    for k, required in enumerate(step.requires):
        loc: list[str | int] = ["steps", i, "requires", k]
        if required == step.key:
            report.fail(loc, f"step {step.key!r} cannot require itself")
        if required not in index_of:
            report.fail(loc, f"prerequisite {required!r} is not a step of this template")
        if required in seen:
            report.fail(loc, f"prerequisite {required!r} is listed twice")
        seen.add(required)


def _check_due_reference(
    i: int, step: _StepModel, index_of: Mapping[str, int], report: _Reporter
) -> None:
    due = step.due
    if due is None:
        return
    if due.after == step.key:
        report.fail(
            ["steps", i, "due", "after"],
            f"due rule of {step.key!r} cannot be anchored on the step itself",
        )
    if due.after == CHAIN_STARTED:
        if due.on == "completed":
            report.fail(
                ["steps", i, "due", "on"],
                f"'{CHAIN_STARTED}' can only be 'started'; omit 'on' or anchor on a step",
            )
    elif due.after not in index_of:
        report.fail(
            ["steps", i, "due", "after"],
            f"due rule anchor {due.after!r} is neither {CHAIN_STARTED!r} "
            "nor a step of this template",
        )


def _check_graph(
    steps: Sequence[_StepModel], index_of: Mapping[str, int], report: _Reporter
) -> list[int]:
    """Refuse templates whose steps cannot all become ready; return a topological order."""
    if all(step.requires for step in steps):
        report.fail(
            ["steps"],
            "no step without prerequisites (requires: []), so the chain could never start",
        )

    # Kahn's algorithm: what it cannot reach are the steps in or downstream of a cycle.
    waiting = [len(step.requires) for step in steps]
    dependants: list[list[int]] = [[] for _ in steps]
    for i, step in enumerate(steps):
        for required in step.requires:
            dependants[index_of[required]].append(i)
    order = [i for i, count in enumerate(waiting) if count == 0]
    for i in order:  # the list grows while we walk it
        for dependant in dependants[i]:
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                order.append(dependant)
    if len(order) == len(steps):
        return order

    ready = set(order)
    never_ready = [step.key for i, step in enumerate(steps) if i not in ready]
    for i in range(len(steps)):
        if i in ready:
            continue
        cycle = _shortest_cycle(i, steps, index_of)
        if cycle is not None:
            report.fail(
                ["steps", i, "requires"],
                f"prerequisite cycle {' -> '.join(cycle)} (each step requires the next); "
                f"these steps can never become ready: {', '.join(never_ready)}",
            )
    # Unreachable only if something is waiting on a cycle, and a cycle was reported above.
    raise AssertionError("steps are blocked but no cycle was found")  # pragma: no cover


def _shortest_cycle(
    start: int, steps: Sequence[_StepModel], index_of: Mapping[str, int]
) -> list[str] | None:
    """Step keys of a shortest ``requires`` path from ``start`` back to itself, if any."""
    parent: dict[int, int] = {}
    frontier = [start]
    while frontier:
        following: list[int] = []
        for node in frontier:
            for required in steps[node].requires:
                target = index_of[required]
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    path.reverse()
                    return [steps[n].key for n in (*path, start)]
                if target not in parent:
                    parent[target] = node
                    following.append(target)
        frontier = following
    return None


def _check_due_anchors(steps: Sequence[_StepModel], order: Sequence[int], report: _Reporter) -> None:
    """A deadline must count from something that surely happens before its step can start."""
    ancestors: dict[str, frozenset[str]] = {}
    for i in order:  # prerequisites come first, so their ancestor sets already exist
        step = steps[i]
        found: set[str] = set()
        for required in step.requires:
            found.add(required)
            found |= ancestors[required]
        ancestors[step.key] = frozenset(found)
    for i, step in enumerate(steps):
        due = step.due
        if due is None or due.after == CHAIN_STARTED or due.after in ancestors[step.key]:
            continue
        report.fail(
            ["steps", i, "due", "after"],
            f"due rule anchor {due.after!r} is not a prerequisite of this step, "
            "so its clock may never start before this step; anchor the rule on "
            f"{CHAIN_STARTED!r} or on a step that {step.key!r} (transitively) requires",
        )
