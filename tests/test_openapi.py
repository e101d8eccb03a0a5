"""The committed OpenAPI document is what the app serves."""

from __future__ import annotations

import json
from pathlib import Path

from casemgmt.app import openapi_document

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app():
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == openapi_document(), "openapi/openapi.json is stale: run `casemgmt openapi`"


def test_every_operation_documents_problem_responses():
    doc = openapi_document()
    for path, ops in doc["paths"].items():
        if path.startswith(("/problems", "/health")):
            continue
        for method, op in ops.items():
            responses = op["responses"]
            assert "401" in responses and "422" in responses, (method, path)
            assert "application/problem+json" in responses["401"]["content"], (method, path)
