"""Roles and permissions as operator data (``policies/roles.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.policy.source import PolicyError, line_of, load_yaml, validate


class _RoleDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1)
    description: str = ""
    permissions: list[str]
    # Officer and administration views of this role cover the whole installation, not only the
    # jurisdiction of the user's organisation and below.
    installation_wide: bool = False


class _RolesDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    permissions: dict[str, str]
    roles: dict[str, _RoleDoc] = Field(min_length=1)


@dataclass(frozen=True)
class RolePolicy:
    """Which permissions each role grants."""

    permissions: dict[str, str]  # permission -> description
    grants: dict[str, frozenset[str]]  # role -> permissions
    titles: dict[str, str]
    wide: frozenset[str] = frozenset()  # installation-wide roles

    def allows(self, roles: frozenset[str], permission: str) -> bool:
        return any(permission in self.grants.get(role, ()) for role in roles)

    def known(self, roles: list[str]) -> frozenset[str]:
        return frozenset(r for r in roles if r in self.grants)

    def installation_wide(self, roles: frozenset[str]) -> bool:
        return bool(roles & self.wide)


# Permissions the code checks; the file may not grant anything else, nor omit any of these.
CODE_PERMISSIONS = frozenset({
    "reference.read", "persons.create", "persons.read", "persons.write",
    "chains.start", "chains.read", "chains.close", "steps.act",
    "consents.record", "consents.read", "interviews.record", "agreements.manage", "agreements.read",
    "audit.read", "processing.read",
    "handovers.read", "handovers.act", "contacts.manage", "notifications.read", "notifications.manage",
    "conferences.read", "conferences.manage", "conferences.participate", "proposals.read",
    "proposals.manage", "proposals.decide", "reports.read", "export.read",
    "requests.manage", "rights.exercise", "holds.manage", "retention.read",
    "offers.manage", "languagepass.write",
})


def load_roles(path: Path) -> RolePolicy:
    raw = load_yaml(path)
    doc: _RolesDoc = validate(_RolesDoc, raw, path)
    for perm in doc.permissions:
        if perm not in CODE_PERMISSIONS:
            raise PolicyError(path, line_of(raw, ["permissions", perm]), f"permissions.{perm}",
                              f"unknown permission; the code knows {sorted(CODE_PERMISSIONS)}")
    missing = CODE_PERMISSIONS - doc.permissions.keys()
    if missing:
        raise PolicyError(path, line_of(raw, ["permissions"]), "permissions",
                          f"missing permissions: {sorted(missing)}")
    for name, role in doc.roles.items():
        for i, perm in enumerate(role.permissions):
            if perm not in doc.permissions:
                raise PolicyError(path, line_of(raw, ["roles", name, "permissions", i]),
                                  f"roles.{name}.permissions[{i}]",
                                  f"unknown permission '{perm}'")
    return RolePolicy(
        permissions=dict(doc.permissions),
        grants={name: frozenset(r.permissions) for name, r in doc.roles.items()},
        titles={name: r.title for name, r in doc.roles.items()},
        wide=frozenset(name for name, r in doc.roles.items() if r.installation_wide),
    )
