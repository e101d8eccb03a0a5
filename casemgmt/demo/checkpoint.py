"""The demo's signed audit checkpoint: written after seeding, with a development key created on
first use next to the master key (as ``demo_master_key`` does for the master key)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from casemgmt.config import Settings
from casemgmt.database import make_engine
from casemgmt.privacy.checkpoints import (
    CheckpointError,
    CheckpointRefused,
    generate_key_file,
    load_private_key,
    write_checkpoint,
)

DEMO_CHECKPOINT_DIR = Path(".casemgmt/audit-checkpoints")


def demo_checkpoint(settings: Settings) -> int:
    """Append a checkpoint to the configured directory (or ``.casemgmt/audit-checkpoints``):
    0 when written, 1 when refused (said on stderr; the demo serves anyway)."""
    key_file = settings.audit_checkpoint_key_file
    if not key_file.exists():
        generate_key_file(key_file)
    directory = settings.audit_checkpoint_dir or DEMO_CHECKPOINT_DIR
    engine = make_engine(settings.database_url)
    try:
        print(write_checkpoint(engine, directory, load_private_key(key_file)).describe())
        return 0
    except (CheckpointRefused, CheckpointError) as exc:
        print(f"audit checkpoint REFUSED: {exc}\n(a demo database made anew does not match the "
              f"checkpoints of the one before: move {directory} aside to start over)", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def checkpoint_periodically(settings: Settings, every: float) -> threading.Event:
    """Append a checkpoint every ``every`` seconds in a background thread until the returned
    event is set (0: never). A refused checkpoint is said on stderr and the next one is tried."""
    stop = threading.Event()
    if every > 0:
        def loop() -> None:
            while not stop.wait(every):
                demo_checkpoint(settings)

        threading.Thread(target=loop, name="demo-audit-checkpoints", daemon=True).start()
    return stop

