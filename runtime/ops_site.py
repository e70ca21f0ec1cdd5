"""The operations HTTP port: /metrics for Prometheus, /healthz and /readyz as JSON."""
from __future__ import annotations

import json
import time
from typing import Callable

from prometheus_client.twisted import MetricsResource
from sqlalchemy import Engine
from twisted.internet import threads
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from runtime.db_probe import probe


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
    """Ready when the database answers and the process's own conditions hold: ``conditions``
    gives (whether they hold, what to show of them)."""

    def __init__(self, db_check: Callable[[], None], db_up, conditions: Callable[[], tuple[bool, dict]],
                 mask: Callable[[str], str] = str):
        super().__init__()
        self.db_check = db_check
        self.db_up = db_up
        self.conditions = conditions
        self.mask = mask

    def render_GET(self, request):
        d = threads.deferToThread(self.db_check)
        d.addCallbacks(lambda _: None, lambda f: f.getErrorMessage() or f.type.__name__)
        d.addCallback(self._answer, request)
        return NOT_DONE_YET

    def _answer(self, db_error, request) -> None:
        self.db_up.set(0 if db_error else 1)
        holds, shown = self.conditions()
        ready = db_error is None and holds
        body = {"status": "ready" if ready else "not ready",
                "database": "ok" if db_error is None else f"unreachable: {self.mask(db_error)}", **shown}
        self._send(request, 200 if ready else 503, body)


def ops_site(registry, db_up, engine: Engine,
             conditions: Callable[[], tuple[bool, dict]] = lambda: (True, {}), mask: Callable[[str], str] = str,
             ) -> Site:
    """/metrics of ``registry``, /healthz and /readyz (each /readyz probes ``engine``'s database and
    refreshes ``db_up``)."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))
    root.putChild(b"healthz", Healthz(time.monotonic()))
    root.putChild(b"readyz", Readyz(lambda: probe(engine), db_up, conditions, mask))
    return Site(root)
