"""The case manager's screens (Meine Fälle, persons, chains)."""

from __future__ import annotations

from casemgmt.web.routing import web_router

router = web_router()
