"""Every template version the installation knows: the files' current versions plus each version
a running chain may still use, read back from the database."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.chains.models import ChainTemplateVersion
from casemgmt.chains.spec import ChainTemplate
from casemgmt.policy.source import PolicyError


class TemplateCatalog:
    """Template versions by (key, version); ``current`` is what new chains start from."""

    def __init__(self, current: dict[str, ChainTemplate], versions: Iterable[ChainTemplate],
                 registered: dict[tuple[str, int], datetime] | None = None):
        self.current = dict(current)
        self._registered = dict(registered or {})
        self._versions = {(t.key, t.version): t for t in versions}
        for t in current.values():
            self._versions[(t.key, t.version)] = t

    def get(self, key: str, version: int) -> ChainTemplate | None:
        return self._versions.get((key, version))

    def load(self, session: Session, key: str, version: int) -> ChainTemplate | None:
        """The version, read from the database if this process has not seen it yet: a chain
        may have been migrated to a version stored by ``casemgmt chains migrate`` after start."""
        template = self._versions.get((key, version))
        if template is None:
            row = session.get(ChainTemplateVersion, (key, version))
            if row is not None:
                template = ChainTemplate.from_document(row.document)
                self._versions[(key, version)] = template
                self._registered[(key, version)] = row.registered_at
        return template

    def registered_at(self, key: str, version: int) -> datetime | None:
        return self._registered.get((key, version))

    def versions_of(self, key: str) -> list[ChainTemplate]:
        return sorted((t for (k, _), t in self._versions.items() if k == key), key=lambda t: t.version)


def register_templates(session: Session, current: dict[str, ChainTemplate], now: datetime,
                       store: bool = True) -> TemplateCatalog:
    """Store each current template version not yet stored and load all stored versions.

    A version number is a promise: if the file's content differs from what was stored under the
    same version, running chains would silently change meaning, so start-up is refused. With
    ``store=False`` (a dry run) the catalogue is the same but nothing is written."""
    stored = {(row.key, row.version): row for row in session.scalars(select(ChainTemplateVersion))}
    for template in current.values():
        row = stored.get((template.key, template.version))
        if row is None:
            newest = max((v for (k, v) in stored if k == template.key), default=0)
            if template.version < newest:
                raise PolicyError(
                    Path(template.source), None, "version",
                    f"version {template.version} is older than the stored version {newest}",
                )
            row = ChainTemplateVersion(
                key=template.key,
                version=template.version,
                title=template.title,
                digest=template.digest(),
                document=template.to_document(),
                registered_at=now,
            )
            session.add(row)
            stored[(template.key, template.version)] = row
        elif row.digest != template.digest():
            raise PolicyError(
                Path(template.source), None, "version",
                f"version {template.version} of '{template.key}' is already in use with different "
                "content; raise the version number to publish a change",
            )
    if store:
        session.commit()
    else:
        session.rollback()
    versions = [ChainTemplate.from_document(row.document) for row in stored.values()]
    return TemplateCatalog(current, versions, {k: row.registered_at for k, row in stored.items()})
