"""Metrics of the processes other than the gateway: debit engines and the drop watcher.

Each exports what its alerts need, on its own HTTP port (/metrics, /healthz, /readyz, as the
gateway does). Backlogs are read from the database every ``refresh_s`` seconds, off the reactor.
"""
from __future__ import annotations

import logging
from config.clock import SYSTEM_CLOCK
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select
from twisted.internet import task, threads

from runtime.db_probe import PROBE

log = logging.getLogger("gridpay.metrics")


def _age(now: datetime, then) -> float:
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


class EngineMetrics(ProcessMetrics):
    """A debit engine: its links (engines.link.PrometheusLinkMetrics) and the debit pipeline's backlog."""

    def __init__(self, registry: CollectorRegistry | None = None):
        from engines.link import PrometheusLinkMetrics

        super().__init__(registry)
        r = self.registry
        self.link = PrometheusLinkMetrics(r)
        self.reversals = Gauge("gridpay_debit_reversals", "Debit reversals (store and forward) by state",
                               ["bank", "state"], registry=r)
        self.chunks = Gauge("gridpay_debit_chunks", "Debit chunks not done, by state", ["bank", "state"], registry=r)
        self.oldest_ready = Gauge("gridpay_debit_oldest_ready_chunk_age_seconds",
                                  "Age of the oldest chunk waiting for an engine", ["bank"], registry=r)

    def refresh(self, conn, now: datetime) -> None:
        from engines.tables import debit_chunks, debit_reversals

        _set_counts(self.reversals, conn.execute(
            select(debit_reversals.c.bank_code, debit_reversals.c.state, func.count())
            .group_by(debit_reversals.c.bank_code, debit_reversals.c.state)))
        _set_counts(self.chunks, conn.execute(
            select(debit_chunks.c.bank_code, debit_chunks.c.state, func.count())
            .where(debit_chunks.c.state != "done").group_by(debit_chunks.c.bank_code, debit_chunks.c.state)))
        oldest = conn.execute(select(debit_chunks.c.bank_code, func.min(debit_chunks.c.created_at))
                              .where(debit_chunks.c.state == "ready").group_by(debit_chunks.c.bank_code))
        self.oldest_ready.clear()
        for bank, created in oldest:
            self.oldest_ready.labels(bank).set(_age(now, created))


class ReconMetrics(ProcessMetrics):
    """The drop watcher: reconciliation items left open, and how old the oldest is."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        r = self.registry
        self.open_items = Gauge("gridpay_recon_open_items", "Open reconciliation items by bank and kind",
                                ["bank", "kind"], registry=r)
        self.oldest_open = Gauge("gridpay_recon_oldest_open_item_age_seconds",
                                 "Age of the oldest open reconciliation item", ["bank"], registry=r)

    def refresh(self, conn, now: datetime) -> None:
        from ledger.recon_tables import recon_items

        open_ = recon_items.c.status == "open"
        bank = func.coalesce(recon_items.c.bank_code, "-")
        _set_counts(self.open_items, conn.execute(
            select(bank, recon_items.c.kind, func.count()).where(open_).group_by(bank, recon_items.c.kind)))
        self.oldest_open.clear()
        for code, created in conn.execute(select(bank, func.min(recon_items.c.created_at)).where(open_).group_by(bank)):
            self.oldest_open.labels(code).set(_age(now, created))


class SchedulerMetrics(ProcessMetrics):
    """The plan scheduler: when its last pass ended, the batches it made, the passes that failed."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        r = self.registry
        self.last_pass = Gauge("gridpay_scheduler_last_pass_timestamp_seconds",
                               "When the scheduler's last pass over the plans ended (Unix time)", registry=r)
        self.batches = Counter("gridpay_scheduler_batches_made", "Batches made from due plans", registry=r)
        self.failures = Counter("gridpay_scheduler_pass_failures", "Passes over the plans that failed", registry=r)
        self.plans = Gauge("gridpay_scheduler_active_plans", "Active debit plans", registry=r)

    def refresh(self, conn, now: datetime) -> None:
        from engines.tables import debit_plans

        self.plans.set(conn.execute(select(func.count()).where(debit_plans.c.status == "A")).scalar_one())

    def passed(self, runs: list | None) -> None:
        """After each pass: ``runs`` made, or None when the pass failed."""
        if runs is None:
            self.failures.inc()
            return
        self.batches.inc(sum(1 for run in runs if run.outcome == "made"))
        self.last_pass.set_to_current_time()


def serve_threaded(metrics: ProcessMetrics, engine, host: str, port: int, stop, refresh_s: float = 15.0) -> int:
    """/metrics for a process without a reactor (scheduler, watcher), refreshed on a thread of its
    own until ``stop`` is set; returns the port (``port`` 0: any free one)."""
    import threading

    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)

    def refresh():
        while not stop.is_set():
            metrics.poll(engine)
            stop.wait(refresh_s)

    threading.Thread(target=refresh, name="metrics-refresh", daemon=True).start()
    return server.server_port


def _set_counts(gauge: Gauge, rows) -> None:
    gauge.clear()  # a state that emptied must read 0 rather than keep its last count
    for bank, state, count in rows:
        gauge.labels(bank or "-", state).set(count)


def serve_metrics(reactor, metrics: ProcessMetrics, engine, host: str, port: int):
    """/metrics, /healthz and /readyz for a process without listeners of its own; returns the port."""
    from twisted.internet import endpoints

    from runtime.ops_site import ops_site

    return endpoints.TCP4ServerEndpoint(reactor, port, interface=host).listen(
        ops_site(metrics.registry, metrics.db_up, engine))
