"""A property-based run of the service's own OpenAPI document against the running service
(schemathesis), on SQLite and PostgreSQL: for every operation, requests generated from its schema
(25 per operation, derandomised so that CI runs the same ones) get no 5xx, a declared status and
content type, and a body that conforms to the schema. Run as an auditor (a client's API key with
the auditor's scopes) and as the administrator (a session: principal.manage is for people only)."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance,
)

from api_harness import add_client_with_key, running_service
from ledger.identity import ROLES
from test_api_customers import C1 as SEEDED, seed

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 25


def run_every_operation(base_url: str, headers: dict[str, str]) -> list[str]:
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def conforms(case):
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

        conforms()
        if "{customer_no}" in operation.path and operation.method.upper() == "GET":
            # generated numbers are rarely a customer's: the seeded one's full answers conform too
            case = operation.Case(path_parameters={"customer_no": SEEDED})
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
        checked.append(operation.label)
    return checked


@pytest.mark.parametrize("who", ["auditor", "administrator"])
def test_generated_requests_get_no_5xx_and_schema_conformant_answers(db_url, who):
    with running_service(db_url) as service:
        seed(service.engine)
        if who == "auditor":
            token = add_client_with_key(service.engine, "audit-client", ROLES["auditor"])
        else:
            token = service.login("root")
        checked = run_every_operation(service.base_url, {"Authorization": f"Bearer {token}"})
    assert "GET /v1/customers/{customer_no}" in checked and "POST /v1/refunds" in checked
