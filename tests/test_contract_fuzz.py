"""Contract fuzzing with Schemathesis: every operation of the OpenAPI, with data generated from
its schemas, sent with the token of each role (and without one). Zero 5xx, and every answer
conforms to the contract: a documented status code, the documented content type, headers and
body schema, `Allow` on 405.

Bounded for CI: a fixed number of examples per operation, derandomized, so a run is the same run
every time (the ``explore`` Hypothesis profile or SCHEMATHESIS_EXAMPLES draws more)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from casemgmt.app import openapi_document
from conftest import MASTER_KEY

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "3"))
DERANDOMIZE = os.environ.get("HYPOTHESIS_PROFILE", "ci") != "explore"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, allow_header_conformance,
          negative_data_rejection]
# The six roles of policies/roles.yaml that people hold, each at an organisation where it works.
ROLES = [("ennetal_ki", "case_manager"), ("ennetal_abh", "clerk"), ("ennetal_ki", "moderator"),
         ("ennetal_ki", "steering"), ("ennetal_ki", "dpo"), ("ennetal_ki", "admin")]


@pytest.fixture
def fuzz_app(settings, db, policies, clock):
    from casemgmt.app import create_app

    # Rate limits off: the fuzzer is one client sending far more than a person would.
    quiet = settings.model_copy(update={
        "rate_limit_expensive_per_subject": 0, "rate_limit_expensive_per_address": 0,
        "rate_limit_writes_per_subject": 0, "rate_limit_writes_per_address": 0})
    return create_app(quiet, engine=db, policies=policies, clock=clock, master_key=MASTER_KEY)


@pytest.fixture
def fuzz_client(fuzz_app):
    from fastapi.testclient import TestClient

    with TestClient(fuzz_app, raise_server_exceptions=False) as client:
        yield client


# The committed contract is the app's (tests/test_openapi.py holds them equal).
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture
def tokens(auth):
    return [auth(org, role) for org, role in ROLES] + [{}]


OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_every_operation_keeps_its_contract(operation, tokens, fuzz_client):
    # Valid data (as the contract describes it) and invalid data (which must get a 4xx).
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def each(case):
        for headers in tokens:
            kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
            kwargs.pop("cookies", None)  # none in this API; the test client wants them on itself
            if isinstance(kwargs.get("data"), bytes | str):
                kwargs["content"] = kwargs.pop("data")  # raw bodies (httpx names them content)
            response = fuzz_client.request(**kwargs)
            case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=kwargs)

    each()
