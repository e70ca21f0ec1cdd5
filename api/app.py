"""``create_app(settings, engine, clock)``: the operations API as an ASGI application.

The clock is the one clock (config/clock.py): every "now" of a request (sessions' expiry, lock-out,
idempotency keys' age, audit times) comes from it, so a test hands in a clock it moves.
"""
from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from api import docs_page, problems
from api.console.app import install as install_console
from api.deps import ApiContext
from api.idempotency import IDEMPOTENCY_KEY
from api.metrics import ApiMetrics, MetricsMiddleware
from api.problems import ProblemDoc
from api.routes import PUBLIC, ROUTERS
from api.throttle import LoginThrottle
from config.clock import Clock
from config.settings import Settings

DESCRIPTION = """The operations API of gridpay: customers, their bills, payments, prepaid balances,
debits and notices; refunds. Authenticate with `Authorization: Bearer <session token or API key>`
(`POST /v1/sessions` gives a session token). Errors are RFC 9457 problem documents; amounts are
integer fen; lists are paginated with `cursor`; every changing POST takes an `Idempotency-Key`.
See docs/api.md."""


def create_app(settings: Settings, engine: Engine, clock: Clock,
               registry: CollectorRegistry | None = None, reads: Engine | None = None) -> FastAPI:
    """``reads``: the replica's engine for reports and the day at a glance (None: ``engine``)."""
    app = FastAPI(title="gridpay operations API", version="1", description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    metrics = ApiMetrics(registry)
    app.state.context = ApiContext(settings, engine, clock, metrics,
                                   LoginThrottle(settings.api.login_attempts_per_minute), reads)
    for router in ROUTERS:
        app.include_router(router)
    problems.install(app)
    docs_page.install(app)
    install_console(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics, clock=clock)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, with the problem document's schema that every error response names."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ProblemDoc"] = ProblemDoc.model_json_schema(ref_template="#/components/schemas/{model}")
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if path in PUBLIC:                  # the log-in and the operations endpoints
                    operation["security"] = []
                _key_required(operation)
        app.openapi_schema = schema
    return app.openapi_schema


def _key_required(operation: dict) -> None:
    """The Idempotency-Key header is required (missing, it is our own 400 problem, not FastAPI's 422)."""
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "header" and parameter["name"] == IDEMPOTENCY_KEY:
            parameter["required"] = True
            options = parameter["schema"].get("anyOf", [parameter["schema"]])
            parameter["schema"] = next(option for option in options if option.get("type") == "string")
