"""Metrics of the debit channel's processes: the debit engines and the plan scheduler (on
``runtime.process_metrics``: each on its own HTTP port, backlogs read from the database)."""
from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select

from runtime.process_metrics import ProcessMetrics, age_s, set_counts


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

        set_counts(self.reversals, conn.execute(
            select(debit_reversals.c.bank_code, debit_reversals.c.state, func.count())
            .group_by(debit_reversals.c.bank_code, debit_reversals.c.state)))
        set_counts(self.chunks, conn.execute(
            select(debit_chunks.c.bank_code, debit_chunks.c.state, func.count())
            .where(debit_chunks.c.state != "done").group_by(debit_chunks.c.bank_code, debit_chunks.c.state)))
        oldest = conn.execute(select(debit_chunks.c.bank_code, func.min(debit_chunks.c.created_at))
                              .where(debit_chunks.c.state == "ready").group_by(debit_chunks.c.bank_code))
        self.oldest_ready.clear()
        for bank, created in oldest:
            self.oldest_ready.labels(bank).set(age_s(now, created))


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
