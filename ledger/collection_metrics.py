"""The collection rate's gauges, served by ``gridpay collection-rate`` (one per site).

Why a process of its own: every other process with metrics may run twice or more (gateways, API
instances, engines, notifiers, schedulers), and each copy would export the same site-wide figures,
so that a ``sum`` over instances would double them. The exporter is one small process; a second
one (a failover copy) is harmless because the alert and the dashboard aggregate with ``max``.

The figures are read from the database at most once every ``every_s`` seconds by the injected
clock (a period's allocations at 4.3 M customers take seconds to sum); a scrape in between gets the
last snapshot, which is swapped whole, so that no scrape sees half of one refresh.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from config.clock import SYSTEM_CLOCK, Clock
from ledger.collection_rate import CollectionFigures, billing_period, collection_figures
from ledger.replica_lag import ReplicaLagMetrics
from runtime.db_probe import PROBE
from runtime.process_metrics import ProcessMetrics


@dataclass(frozen=True)
class Snapshot:
    figures: CollectionFigures
    read_at: float            # Unix seconds, by the clock


class CollectionRateCollector:
    """A Prometheus collector of the last snapshot, and of the alert's settings and the business day."""

    def __init__(self, clock: Clock, target: float, alert_from_day: int):
        self.clock, self.target, self.alert_from_day = clock, target, alert_from_day
        self.snapshot: Snapshot | None = None

    def describe(self):
        return self._families(None)

    def collect(self):
        return self._families(self.snapshot)

    def _families(self, snap: Snapshot | None) -> list[GaugeMetricFamily]:
        def gauge(name: str, doc: str, labels: list[str] | None = None, value: float | None = None):
            return GaugeMetricFamily(name, doc, labels=labels, value=value)

        billed = gauge("gridpay_collection_billed_fen", "The billing period's bills in force, by district (fen)",
                       ["period", "district"])
        collected = gauge("gridpay_collection_collected_fen", "Collected on the billing period's bills, net of "
                          "reversals and corrections, by district (fen)", ["period", "district"])
        rate = gauge("gridpay_collection_rate", "Collected / billed of the billing period, by district",
                     ["period", "district"])
        by_channel = gauge("gridpay_collection_channel_collected_fen", "Collected on the billing period's bills, "
                           "by channel (fen)", ["period", "channel"])
        channel_rate = gauge("gridpay_collection_channel_rate", "Collected through a channel / billed, of the "
                             "billing period", ["period", "channel"])
        read_at = gauge("gridpay_collection_refreshed_timestamp_seconds",
                        "When the figures were last read from the database (Unix time)",
                        value=None if snap is None else snap.read_at)
        settings = [
            gauge("gridpay_collection_target_ratio", "The collection rate expected (collection_rate.target)",
                  value=self.target),
            gauge("gridpay_collection_alert_from_day", "From this day of the month, a rate below target alerts "
                  "(collection_rate.alert_from_day)", value=self.alert_from_day),
            gauge("gridpay_collection_day_of_month", "The day of the month of the business date",
                  value=self.clock.business_date().day),
        ]
        if snap is not None:
            f, period = snap.figures, snap.figures.period
            for district, fen in sorted(f.billed.items()):
                billed.add_metric([period, district], fen)
            for district, fen in sorted(f.collected.items()):
                collected.add_metric([period, district], fen)
            for district, ratio in sorted(f.district_rates().items()):
                rate.add_metric([period, district], ratio)
            for channel, fen in sorted(f.by_channel.items()):
                by_channel.add_metric([period, channel], fen)
            for channel, ratio in sorted(f.channel_rates().items()):
                channel_rate.add_metric([period, channel], ratio)
        return [billed, collected, rate, by_channel, channel_rate, read_at, *settings]


class CollectionRateMetrics(ProcessMetrics):
    """``gridpay_db_up`` and the collection rate's collector, refreshed at most every ``every_s``;
    with ``replica`` (the connection is the read replica's) also the replica's replay lag, read at
    every refresh: this is the site's one process that reads the replica on a timer."""

    def __init__(self, registry: CollectorRegistry | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 target: float = 0.95, alert_from_day: int = 25, months_back: int = 0, every_s: float = 60.0,
                 replica: bool = False):
        super().__init__(registry)
        self.clock, self.months_back, self.every_s = clock, months_back, every_s
        self.collector = CollectionRateCollector(clock, target, alert_from_day)
        self.registry.register(self.collector)
        self.replica_lag = ReplicaLagMetrics(self.registry) if replica else None

    @classmethod
    def of(cls, section, clock: Clock, replica: bool = False) -> "CollectionRateMetrics":
        """From the ``[collection_rate]`` settings; ``replica``: it reads ``database.replica_url``."""
        return cls(clock=clock, target=section.target, alert_from_day=section.alert_from_day,
                   months_back=section.months_back, every_s=section.refresh_s, replica=replica)

    def due(self) -> bool:
        snap = self.collector.snapshot
        return snap is None or self.clock.seconds() - snap.read_at >= self.every_s

    def refresh(self, conn, now: datetime) -> None:
        if self.replica_lag is not None:
            self.replica_lag.refresh(conn)
        if not self.due():
            conn.execute(PROBE)  # the database is still checked: gridpay_db_up stays true to it
            return
        at = self.clock.seconds()
        figures = collection_figures(conn, billing_period(self.clock, self.months_back))
        self.collector.snapshot = Snapshot(figures, at)
