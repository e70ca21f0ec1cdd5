"""The drop watcher's metrics: reconciliation items left open, and how old the oldest is."""
from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import func, select

from ledger.recon_tables import recon_items
from runtime.process_metrics import ProcessMetrics, age_s, set_counts


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
        open_ = recon_items.c.status == "open"
        bank = func.coalesce(recon_items.c.bank_code, "-")
        set_counts(self.open_items, conn.execute(
            select(bank, recon_items.c.kind, func.count()).where(open_).group_by(bank, recon_items.c.kind)))
        self.oldest_open.clear()
        for code, created in conn.execute(select(bank, func.min(recon_items.c.created_at)).where(open_).group_by(bank)):
            self.oldest_open.labels(code).set(age_s(now, created))
