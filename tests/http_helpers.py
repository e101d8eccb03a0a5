"""Assertions every HTTP test makes about a response (success JSON, or an RFC 9457 problem), and
filling ids into a path or body."""

from __future__ import annotations

from datetime import datetime
from typing import Any

PROBLEM_JSON = "application/problem+json"


def ok(resp, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    return resp.json()


def problem(resp, status: int, slug: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers["content-type"]
    body = resp.json()
    assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def fill_ids(value, ids):
    """``value`` (a path, or a JSON body) with every ``{name}`` replaced by ``ids[name]``."""
    if isinstance(value, str):
        for name, v in ids.items():
            value = value.replace("{" + name + "}", str(v))
        return value
    if isinstance(value, dict):
        return {k: fill_ids(v, ids) for k, v in value.items()}
    return value
