"""The navigation: each screen module names its entries with the permission they need; a user
sees only the entries one of their roles allows."""

from __future__ import annotations

from dataclasses import dataclass

from casemgmt.auth.roles import RolePolicy


@dataclass(frozen=True)
class NavEntry:
    """One entry of the main navigation."""

    label: str  # a msgid of the catalogue
    path: str
    permission: str
    order: int = 100


NAVIGATION: list[NavEntry] = []


def nav_entry(label: str, path: str, permission: str, order: int = 100) -> NavEntry:
    entry = NavEntry(label, path, permission, order)
    if entry not in NAVIGATION:
        NAVIGATION.append(entry)
    return entry


def entries_for(policy: RolePolicy, roles: frozenset[str]) -> list[NavEntry]:
    return sorted((e for e in NAVIGATION if policy.allows(roles, e.permission)), key=lambda e: (e.order, e.label))
