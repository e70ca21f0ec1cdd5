"""Every route of the application, every role: allowed or 403 as docs/access.md's table says;
without credentials a 401 problem. The routes are read from ``app.routes``, so a new route is
checked by itself (and one that forgot ``require`` fails unless it is in ``api.routes.PUBLIC``)."""
from __future__ import annotations

import uuid

import pytest
from fastapi.routing import APIRoute

from api.deps import permission_of
from api.problems import BASE
from api.console.app import PREFIX as CONSOLE
from api.routes import PUBLIC
from api_harness import operator_name, running_service
from ledger.identity import ROLES
from ledger.schema import customers
from ledger_helpers import customer_row
from test_identity_roles import documented_table

CUSTOMER = "C1"


def every_route(routes) -> list:
    """``app.routes`` flattened: newer FastAPI keeps an included router as one entry (``original_router``)."""
    out = []
    for route in routes:
        included = getattr(route, "original_router", None)
        out.extend(every_route(included.routes) if included is not None else [route])
    return out


def checked_routes(app) -> list[tuple[str, str, str | None]]:
    """(method, path, permission or None: any authenticated principal) of every non-public route."""
    out = []
    for route in every_route(app.routes):
        if route.path in PUBLIC or route.path == CONSOLE:
            continue   # the console signs its operators in by cookie: tests/test_console_*.py check its pages
        assert isinstance(route, APIRoute), f"{route.path} is neither public nor an API route"
        authenticates, permission = permission_of(route)
        assert authenticates, f"{route.path} has no require(...) dependency and is not in api.routes.PUBLIC"
        for method in sorted(route.methods):
            out.append((method, route.path, permission))
    return out


def _alternatives(permission: str | tuple[str, ...]) -> set[str]:
    """A route may require one of several permissions (``require((a, b))``)."""
    return {permission} if isinstance(permission, str) else set(permission)


def call(service, token: str | None, method: str, path: str):
    url = path.replace("{customer_no}", CUSTOMER).replace("{name}", "no-such-plan")
    headers = {"Idempotency-Key": uuid.uuid4().hex} if method == "POST" else {}
    with service.client(token) as http:
        # an empty body: an allowed role gets past authorisation to validation (422), changing nothing
        return http.request(method, url, headers=headers, json={} if method in ("POST", "PUT", "PATCH") else None)


def test_every_role_on_every_route_is_allowed_or_refused_as_the_table_says(db_url):
    table = documented_table()
    assert set(table) == set(ROLES)
    with running_service(db_url) as service:
        with service.engine.begin() as conn:
            conn.execute(customers.insert(), [customer_row(CUSTOMER)])
        routes = checked_routes(service.app)
        assert {path for _, path, _ in routes} >= {"/v1/me", "/v1/customers/{customer_no}", "/v1/refunds"}
        tokens = {role: service.login(operator_name(role)) for role in ROLES}
        seen = []
        for method, path, permission in routes:
            answer = call(service, None, method, path)
            assert answer.status_code == 401 and answer.json()["type"] == BASE + "not-authenticated", (method, path)
            for role in ROLES:
                # log-out ends the session it is called with: a fresh one each time
                token = service.login(operator_name(role)) if method == "DELETE" else tokens[role]
                answer = call(service, token, method, path)
                allowed = permission is None or bool(_alternatives(permission) & table[role])
                if allowed:
                    assert answer.status_code not in (401, 403), (role, method, path, answer.text)
                else:
                    assert answer.status_code == 403, (role, method, path, answer.text)
                    assert answer.json()["type"] == BASE + "forbidden"
                seen.append((role, method, path, allowed))
        refused = sum(1 for *_, allowed in seen if not allowed)
        assert refused and refused < len(seen)
        assert service.metric("gridpay_auth_refusals_total", {"reason": "forbidden"}) == refused


@pytest.mark.parametrize("path", sorted(PUBLIC - {"/docs/oauth2-redirect", "/docs/static", "/redoc", "/metrics", "/v1/sessions"}))
def test_the_public_routes_answer_without_credentials(sqlite_url, path):
    with running_service(sqlite_url) as service, service.client() as http:
        assert http.get(path).status_code == 200
        assert http.get("/metrics").status_code == 200
