"""Imports every model so that the metadata is complete (Alembic, tests, create_all)."""

from casemgmt.chains.models import Chain, ChainEvent, ChainStep, ChainTemplateVersion
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.persons.models import Person

__all__ = [
    "Chain", "ChainEvent", "ChainStep", "ChainTemplateVersion", "Jurisdiction", "Organisation",
    "Person",
]
