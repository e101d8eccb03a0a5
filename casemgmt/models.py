"""Imports every model so that the metadata is complete (Alembic, tests, create_all)."""

from casemgmt.chains.models import Chain, ChainEvent, ChainStep, ChainTemplateVersion
from casemgmt.conferences.models import (
    Conference,
    ConferenceAgreement,
    ConferenceCase,
    ConferenceParticipant,
    Finding,
    FindingCase,
    FindingOrganisationKind,
    FindingVote,
)
from casemgmt.handovers.models import Handover, HandoverEvent, OrganisationContact
from casemgmt.interviews.models import Interview
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.languagepass.models import LanguagePassEntry
from casemgmt.notifications.models import OutboxMessage
from casemgmt.offers.models import GoodPractice, Offer, OfferBooking, OfferVersion
from casemgmt.persons.models import Person
from casemgmt.privacy.models import (
    AuditEvent,
    AuditHead,
    AuditKey,
    Consent,
    ConsentWithdrawal,
    DataExchangeAgreement,
    PersonField,
    PersonKey,
    PersonNameToken,
)
from casemgmt.rights.models import DataSubjectRequest, ErasureTombstone, LegalHold, PersonRestriction
from casemgmt.steering.models import Proposal, ProposalEvent, WorkingGroup
from casemgmt.steering.releases import SteeringRelease
from casemgmt.web.models import WebSession


__all__ = [
    "WebSession",
    "Chain", "ChainEvent", "ChainStep", "ChainTemplateVersion", "Jurisdiction", "Organisation",
    "Person", "AuditEvent", "AuditHead", "Consent", "ConsentWithdrawal", "DataExchangeAgreement",
    "PersonField", "PersonKey", "Handover", "HandoverEvent", "OrganisationContact", "OutboxMessage",
    "PersonNameToken", "Conference", "ConferenceAgreement", "ConferenceCase", "ConferenceParticipant",
    "Finding", "FindingCase", "FindingOrganisationKind", "FindingVote", "Proposal", "ProposalEvent",
    "WorkingGroup", "AuditKey", "DataSubjectRequest", "ErasureTombstone", "LegalHold",
    "PersonRestriction", "SteeringRelease", "Interview", "Offer", "OfferVersion", "GoodPractice",
    "OfferBooking", "LanguagePassEntry",
]
