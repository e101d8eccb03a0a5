"""The clerk's screens (Posteingang, handovers, Meine Schritte, outgoing)."""

from __future__ import annotations

from casemgmt.web.routing import web_router

router = web_router()
