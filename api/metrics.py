"""The service's metrics, on the registry /metrics serves: requests and their latency by route
template (``/v1/customers/{customer_no}``, never the customer number) and status, the database's
state as /readyz last saw it, and ``ledger.identity``'s refusal counter (``AuthMetrics``)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.clock import Clock
from ledger.identity import AuthMetrics

UNMATCHED = "unmatched"   # requests no route took (404s): one label, whatever the path


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter("gridpay_api_requests", "HTTP requests answered, by route template, method "
                                "and status", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("gridpay_api_request_seconds", "Time to answer an HTTP request, by route "
                                 "template and method", ["route", "method"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.db_up = Gauge("gridpay_db_up", "1 when the database answered the last /readyz probe",
                           registry=self.registry)
        self.auth = AuthMetrics(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: the route is known once the router ran)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, clock: Clock):
        self.app, self.metrics, self.clock = app, metrics, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock.monotonic()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope["method"]
            self.metrics.requests.labels(route=route, method=method, status=str(status[0])).inc()
            self.metrics.latency.labels(route=route, method=method).observe(self.clock.monotonic() - started)
