"""Free texts that leave a case or are kept for ever must not carry personal data.

Reasons written into the append-only histories (a blocked or skipped step, a closed chain, a
rejected handover, a withdrawn consent, a decision of the Lenkungsgruppe), and every text that
can reach the steering group (findings, proposals, conference titles, working-group names) pass
:func:`casemgmt.privacy.service.check_free_text` before they are stored: an append-only row can never be erased, so a name
written there would outlive the person's erasure.

The closed-world name check asks only about the persons the text is about (the chain's person,
the cases on the conference's agenda), never about everyone in the records: otherwise the check
would answer any user whether a word is somebody's name anywhere in the installation. Every
refusal is audited (which kinds of data were found, never the text).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import bindparam, literal, select, union_all
from sqlalchemy.orm import Session

from casemgmt.chains.engine import Actor
from casemgmt.conferences.scrubber import Hit, scan
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.models import PersonNameToken
from casemgmt.problems import PersonalDataInText


# The words of the domain that are never a person's name (towns and organisations) and the keyed
# digests of the name words of the persons a text is about (and no one else), in one round trip:
# a text is checked on every blocked or skipped step and closed chain, and three statements cost
# more than the scan itself. Built once.
_PLACE_WORDS = (
    select(Jurisdiction.name.label("word"), literal("place").label("kind")),
    select(Organisation.name, literal("place")),
)
_PLACES = union_all(*_PLACE_WORDS)
_PLACES_AND_DIGESTS = union_all(
    *_PLACE_WORDS,
    select(PersonNameToken.digest, literal("name"))
    .where(PersonNameToken.person_id.in_(bindparam("person_ids", expanding=True))),
)


def places_and_digests(session: Session, person_ids: Iterable[uuid.UUID]) -> tuple[frozenset[str], frozenset[str]]:
    """The domain's place words, and the name digests of these persons only."""
    ids = sorted(set(person_ids))
    rows = session.execute(_PLACES_AND_DIGESTS, {"person_ids": ids}) if ids else session.execute(_PLACES)
    places: set[str] = set()
    digests: set[str] = set()
    for word, kind in rows:
        (places if kind == "place" else digests).add(word)
    return frozenset(places), frozenset(digests)


def find_personal_data(name_token, text: str, digests: frozenset[str], vocabulary: frozenset[str]) -> list[Hit]:
    """``name_token`` gives a token's digest, or the set of its digests under every known key;
    ``digests`` are those of the persons the text is about."""

    def is_name(token: str) -> bool:
        found = name_token(token)
        return (found in digests) if isinstance(found, str) else not digests.isdisjoint(found)

    return scan(text, is_name, vocabulary)


def refusal(session: Session, keys, text: str, field: str, person_ids: Iterable[uuid.UUID],
            actor: Actor, *, entity_type: str, entity_id: str | None,
            extra_words: Iterable[str] = ()) -> tuple[AuditEntry, PersonalDataInText] | None:
    """None if the text may be stored; otherwise the audit entry of the refusal and the 422
    ``personal-data-in-text`` naming what to remove (see privacy.service.check_free_text).
    ``extra_words``: more words of the domain that are never a name (the barrier taxonomy)."""
    if not text or not text.strip():
        return None
    places, digests = places_and_digests(session, person_ids)
    hits = find_personal_data(keys.name_token_digests, text, digests, places | frozenset(extra_words))
    if not hits:
        return None
    return refusal_of(hits, field, actor, entity_type=entity_type, entity_id=entity_id)


def refusal_of(hits: list[Hit], field: str, actor: Actor, *, entity_type: str,
               entity_id: str | None) -> tuple[AuditEntry, PersonalDataInText]:
    problem = PersonalDataInText(
        f"{field}: remove personal data before it is stored: " + "; ".join(h.message for h in hits),
        field=field,
        hits=[{"kind": h.kind, "start": h.start, "end": h.end, "excerpt": h.excerpt,
               "message": h.message} for h in hits],
    )
    entry = AuditEntry(
        agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="E",
        subtype="text.refused", entity_type=entity_type, entity_id=entity_id, outcome="denied",
        detail=f"{field}: " + ", ".join(sorted({h.kind for h in hits})),
    )
    return entry, problem
