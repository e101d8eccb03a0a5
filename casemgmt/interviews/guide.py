"""The Gesprächsleitfaden (``policies/interview.yaml``): topics, questions, the person field each
answer goes to, and the rules that turn answers into suggestions (a chain template, optional
steps). Pure apart from reading the file; every problem is a :class:`PolicyError` with file, line
and field.

A question's answer is written to a field of the person record, so the field's category, its
retention and the legal basis for it apply; ``answer`` repeats the field's type for the
interviewer and must match it. A rule applies when each of its conditions holds for this
interview's answers (an unanswered question fails every condition but none); a rule suggests a
template or an optional step, with a reason the case manager sees. Templates the guide suggests
must have a ``first_interview`` step of the case management (starting a chain from the interview
completes it); a suggested step must be optional in a template the guide suggests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, ChainTemplate
from casemgmt.policy.source import PolicyError, format_loc, line_of, load_yaml, validate
from casemgmt.privacy.policy import FieldSpec

FIRST_INTERVIEW_STEP = "first_interview"
AnswerType = Literal["text", "date", "enum", "integer", "boolean"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_Key = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)


class _QuestionDoc(_Strict):
    key: str = _Key
    text: str = Field(min_length=1, max_length=500)
    answer: AnswerType
    field: str


class _TopicDoc(_Strict):
    key: str = _Key
    title: str = Field(min_length=1, max_length=200)
    questions: list[_QuestionDoc] = Field(min_length=1)


class _ConditionDoc(_Strict):
    in_: list[str] | None = Field(default=None, alias="in", min_length=1)
    min: int | None = None
    max: int | None = None
    is_: bool | None = Field(default=None, alias="is")
    answered: Literal[True] | None = None


class _SuggestDoc(_Strict):
    template: str | None = None
    step: str | None = None


class _RuleDoc(_Strict):
    key: str = _Key
    when: dict[str, _ConditionDoc] = Field(min_length=1)
    suggest: _SuggestDoc
    reason: str = Field(min_length=1, max_length=300)


class _GuideDoc(_Strict):
    version: int = Field(ge=1)
    title: str = Field(min_length=1, max_length=200)
    topics: list[_TopicDoc] = Field(min_length=1)
    rules: list[_RuleDoc] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Question:
    key: str
    topic: str
    text: str
    field: str


@dataclass(frozen=True, slots=True)
class Condition:
    question: str
    values: tuple[str, ...] | None = None
    min: int | None = None
    max: int | None = None
    is_: bool | None = None

    def holds(self, answers: Mapping[str, Any]) -> bool:
        if self.question not in answers or answers[self.question] in (None, ""):
            return False
        value = answers[self.question]
        if self.values is not None and value not in self.values:
            return False
        if self.min is not None and value < self.min:
            return False
        if self.max is not None and value > self.max:
            return False
        return self.is_ is None or value is self.is_


@dataclass(frozen=True, slots=True)
class Rule:
    key: str
    conditions: tuple[Condition, ...]
    template: str | None
    step: str | None
    reason: str

    def applies(self, answers: Mapping[str, Any]) -> bool:
        return all(c.holds(answers) for c in self.conditions)


@dataclass(frozen=True, slots=True)
class Suggested:
    """A template or step suggested, with the rules that led to it (in guide order)."""

    key: str
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Suggestion:
    """What the guide's rules make of one interview's answers."""

    template: Suggested | None
    alternatives: tuple[Suggested, ...]
    steps: tuple[Suggested, ...]

    def to_document(self) -> dict[str, Any]:
        def one(s: Suggested) -> dict[str, Any]:
            return {"key": s.key, "rules": list(s.rules)}

        return {"template": one(self.template) if self.template else None,
                "alternatives": [one(a) for a in self.alternatives], "steps": [one(s) for s in self.steps]}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Suggestion:
        def one(d: Mapping[str, Any]) -> Suggested:
            return Suggested(d["key"], tuple(d["rules"]))

        return cls(one(doc["template"]) if doc.get("template") else None,
                   tuple(one(a) for a in doc["alternatives"]), tuple(one(s) for s in doc["steps"]))


@dataclass(frozen=True)
class Guide:
    """The validated Gesprächsleitfaden."""

    version: int
    title: str
    topics: tuple[tuple[str, str], ...]  # (key, title) in order
    questions: Mapping[str, Question]  # by key, in order
    rules: tuple[Rule, ...]

    def reason(self, rule_key: str) -> str:
        """The reason a rule gives (a rule removed from a later guide: its key)."""
        return next((r.reason for r in self.rules if r.key == rule_key), rule_key)

    def suggest(self, answers: Mapping[str, Any]) -> Suggestion:
        """Answers by question key -> the suggested template (the first template rule that
        applies), the other templates that apply, and the optional steps rules suggest."""
        templates: dict[str, list[str]] = {}
        steps: dict[str, list[str]] = {}
        for rule in self.rules:
            if not rule.applies(answers):
                continue
            if rule.template is not None:
                templates.setdefault(rule.template, []).append(rule.key)
            else:
                assert rule.step is not None
                steps.setdefault(rule.step, []).append(rule.key)
        found = [Suggested(k, tuple(v)) for k, v in templates.items()]
        return Suggestion(found[0] if found else None, tuple(found[1:]),
                          tuple(Suggested(k, tuple(v)) for k, v in steps.items()))


def load_guide(path: Path, fields: Mapping[str, FieldSpec], templates: Mapping[str, ChainTemplate]) -> Guide:
    raw = load_yaml(path)
    doc = cast(_GuideDoc, validate(_GuideDoc, raw, path))

    def fail(loc: Sequence[str | int], message: str) -> NoReturn:
        raise PolicyError(path, line_of(raw, loc), format_loc(loc), message)

    questions: dict[str, Question] = {}
    types: dict[str, FieldSpec] = {}
    topic_keys: set[str] = set()
    used_fields: dict[str, str] = {}
    for t, topic in enumerate(doc.topics):
        if topic.key in topic_keys:
            fail(["topics", t, "key"], f"duplicate topic {topic.key!r}")
        topic_keys.add(topic.key)
        for q, question in enumerate(topic.questions):
            loc: list[str | int] = ["topics", t, "questions", q]
            if question.key in questions:
                fail([*loc, "key"], f"duplicate question {question.key!r}")
            spec = fields.get(question.field)
            if spec is None:
                fail([*loc, "field"], f"{question.field!r} is not a field of the person record (policies/data.yaml)")
            if question.field in used_fields:
                fail([*loc, "field"], f"field {question.field!r} is already asked by {used_fields[question.field]!r}")
            if question.answer != spec.type:
                fail([*loc, "answer"], f"field {question.field!r} takes a {spec.type} answer")
            used_fields[question.field] = question.key
            questions[question.key] = Question(question.key, topic.key, question.text, question.field)
            types[question.key] = spec

    rules: list[Rule] = []
    rule_keys: set[str] = set()
    for r, rule in enumerate(doc.rules):
        loc = ["rules", r]
        if rule.key in rule_keys:
            fail([*loc, "key"], f"duplicate rule {rule.key!r}")
        rule_keys.add(rule.key)
        conditions = []
        for name, cond in rule.when.items():
            where = [*loc, "when", name]
            spec = types.get(name)
            if spec is None:
                fail(where, f"{name!r} is not a question of the guide")
            conditions.append(_condition(name, cond, spec, lambda message, where=where: fail(where, message)))
        if (rule.suggest.template is None) == (rule.suggest.step is None):
            fail([*loc, "suggest"], "suggest either a template or a step")
        rules.append(Rule(rule.key, tuple(conditions), rule.suggest.template, rule.suggest.step, rule.reason))

    suggested = {rule.template for rule in rules if rule.template is not None}
    for r, rule in enumerate(rules):
        if rule.template is not None:
            template = templates.get(rule.template)
            if template is None:
                fail(["rules", r, "suggest", "template"], f"no chain template {rule.template!r}")
            if (FIRST_INTERVIEW_STEP not in template.step_keys()
                    or template.step(FIRST_INTERVIEW_STEP).owner != CASE_MANAGEMENT_OWNER):
                fail(["rules", r, "suggest", "template"],
                     f"{rule.template!r} has no {FIRST_INTERVIEW_STEP!r} step of the case management, which "
                     "an interview completes")
        elif not any(rule.step in templates[t].step_keys() and templates[t].step(rule.step).optional
                     for t in suggested):
            fail(["rules", r, "suggest", "step"],
                 f"{rule.step!r} is not an optional step of a template the guide suggests ({', '.join(sorted(suggested)) or 'none'})")
    return Guide(doc.version, doc.title, tuple((t.key, t.title) for t in doc.topics), questions, tuple(rules))


def _condition(name: str, cond: _ConditionDoc, spec: FieldSpec, fail) -> Condition:
    given = [k for k, v in (("in", cond.in_), ("min", cond.min), ("max", cond.max), ("is", cond.is_),
                            ("answered", cond.answered)) if v is not None]
    if not given:
        fail("name a condition: in, min, max, is or answered")
    if cond.answered and len(given) > 1:
        fail("'answered' stands alone")
    if cond.in_ is not None:
        if spec.type != "enum":
            fail(f"'in' is for answers from a list; {name!r} is a {spec.type} answer")
        unknown = [v for v in cond.in_ if v not in (spec.values or ())]
        if unknown:
            fail(f"{unknown[0]!r} is not an answer to {name!r} (one of {list(spec.values or ())})")
    if (cond.min is not None or cond.max is not None) and spec.type != "integer":
        fail(f"'min' and 'max' are for numbers; {name!r} is a {spec.type} answer")
    if cond.is_ is not None and spec.type != "boolean":
        fail(f"'is' is for yes/no answers; {name!r} is a {spec.type} answer")
    return Condition(name, tuple(cond.in_) if cond.in_ is not None else None, cond.min, cond.max, cond.is_)
