"""The operations HTTP port: /metrics for Prometheus, /healthz and /readyz as JSON."""
from __future__ import annotations

import json
import time
from typing import Callable

from prometheus_client.twisted import MetricsResource
from twisted.internet import threads
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gateway.metrics import GatewayMetrics


class _Json(Resource):
    isLeaf = True

    def _send(self, request, status: int, body: dict) -> None:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps(body).encode())
        request.finish()


class Healthz(_Json):
    def __init__(self, started: float):
        super().__init__()
        self.started = started

    def render_GET(self, request):
        self._send(request, 200, {"status": "up", "uptime_s": round(time.monotonic() - self.started, 1)})
        return NOT_DONE_YET


class Readyz(_Json):
    """Ready when the database answers, every configured listener is up and, where the process
    commits, its commits are completing (``commits`` says why not, or None)."""

    def __init__(self, db_check: Callable[[], None], listeners_up: Callable[[], tuple[int, int]],
                 metrics: GatewayMetrics, commits: Callable[[], str | None] = lambda: None):
        super().__init__()
        self.db_check = db_check
        self.listeners_up = listeners_up
        self.metrics = metrics
        self.commits = commits

    def render_GET(self, request):
        d = threads.deferToThread(self.db_check)
        d.addCallbacks(lambda _: None, lambda f: f.getErrorMessage() or f.type.__name__)
        d.addCallback(self._answer, request)
        return NOT_DONE_YET

    def _answer(self, db_error, request) -> None:
        up, wanted = self.listeners_up()
        self.metrics.db_up.set(0 if db_error else 1)
        stalled = self.commits()
        ready = db_error is None and up == wanted and stalled is None
        body = {"status": "ready" if ready else "not ready",
                "database": "ok" if db_error is None else f"unreachable: {db_error}",
                "commits": stalled or "ok",
                "listeners": {"up": up, "configured": wanted}}
        self._send(request, 200 if ready else 503, body)


def ops_site(metrics: GatewayMetrics, db_check, listeners_up, commits=lambda: None) -> Site:
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=metrics.registry))
    root.putChild(b"healthz", Healthz(time.monotonic()))
    root.putChild(b"readyz", Readyz(db_check, listeners_up, metrics, commits))
    return Site(root)
