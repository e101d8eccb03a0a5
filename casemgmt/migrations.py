"""Running Alembic from code: the CLI, the app's start-up check and the tests share this."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

# alembic.ini and migrations/ live beside the package in a checkout; an installed package (the
# container image) is told where they are.
ROOT = Path(os.environ.get("CASEMGMT_APP_DIR") or Path(__file__).resolve().parent.parent)


class DatabaseNotMigrated(RuntimeError):
    """The database schema is not at the code's migration head."""


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def head_revision() -> str:
    """The migration head of this code."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def ensure_at_head(engine: Engine) -> None:
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False)))
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != script.get_current_head():
        raise DatabaseNotMigrated(
            f"database {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current or 'none'}, the code needs {script.get_current_head()}: run `casemgmt migrate`"
        )
