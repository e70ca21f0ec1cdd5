"""The metrics of a process without listeners of its own (debit engines, the scheduler, the drop
watcher): a registry with ``gridpay_db_up``, refreshed from the database every ``refresh_s`` seconds
off the reactor, served on its own HTTP port (/metrics, /healthz, /readyz, as the gateway's).
Each process's own gauges are a subclass beside it (``engines.process_metrics``,
``ledger.recon.recon_metrics``)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Gauge
from twisted.internet import task, threads

from config.clock import SYSTEM_CLOCK
from runtime.db_probe import PROBE

log = logging.getLogger("gridpay.metrics")


def age_s(now: datetime, then) -> float:
    """Seconds from ``then`` (a database timestamp, or None: 0) to ``now``."""
    if then is None:
        return 0.0
    if then.tzinfo is None:  # SQLite hands back naive UTC
        then = then.replace(tzinfo=timezone.utc)
    return max(0.0, (now - then).total_seconds())


class ProcessMetrics:
    """A registry with ``db_up``, refreshed from the database by ``refresh(conn, now)``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.db_up = Gauge("gridpay_db_up", "1 when the last database check succeeded", registry=self.registry)

    def refresh(self, conn, now: datetime) -> None:  # pragma: no cover - overridden
        conn.execute(PROBE)

    def poll(self, engine) -> None:
        now = SYSTEM_CLOCK.now()
        try:
            with engine.connect() as conn:
                self.refresh(conn, now)
            self.db_up.set(1)
        except Exception as exc:  # noqa: BLE001 - any failure means the database is not there for us
            log.warning("metrics refresh failed: %s", exc)
            self.db_up.set(0)

    def start(self, reactor, engine, refresh_s: float = 15.0) -> task.LoopingCall:
        loop = task.LoopingCall(lambda: threads.deferToThread(self.poll, engine))
        loop.clock = reactor
        loop.start(refresh_s, now=True)
        return loop


def serve_threaded(metrics: ProcessMetrics, engine, host: str, port: int, stop, refresh_s: float = 15.0) -> int:
    """/metrics for a process without a reactor (scheduler, watcher), refreshed on a thread of its
    own until ``stop`` is set; returns the port (``port`` 0: any free one)."""
    import threading

    from prometheus_client import start_http_server

    metrics.poll(engine)  # before serving: a first scrape must not read a database "down" never checked
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)

    def refresh():
        while not stop.wait(refresh_s):
            metrics.poll(engine)

    threading.Thread(target=refresh, name="metrics-refresh", daemon=True).start()
    return server.server_port


def set_counts(gauge: Gauge, rows) -> None:
    gauge.clear()  # a state that emptied must read 0 rather than keep its last count
    for bank, state, count in rows:
        gauge.labels(bank or "-", state).set(count)


def serve_metrics(reactor, metrics: ProcessMetrics, engine, host: str, port: int):
    """/metrics, /healthz and /readyz for a process without listeners of its own; returns the port."""
    from twisted.internet import endpoints

    from runtime.ops_site import ops_site

    return endpoints.TCP4ServerEndpoint(reactor, port, interface=host).listen(
        ops_site(metrics.registry, metrics.db_up, engine))
