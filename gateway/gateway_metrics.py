"""Prometheus metrics of the gateway, in a registry of their own (one per gateway)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime.metric_labels import LATENCY_BUCKETS, LabelCache


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.transactions = Counter(
            "gridpay_transactions", "Requests answered, by bank, MTI, processing code and response code",
            ["bank", "mti", "processing_code", "response_code"], registry=r)
        self.latency = Histogram(
            "gridpay_transaction_seconds", "Time from a request's last byte to its response leaving",
            ["bank", "mti"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("gridpay_in_flight_requests", "Requests received and not yet answered", registry=r)
        self.connections = Gauge("gridpay_connections", "Open connections by bank", ["bank"], registry=r)
        self.connections_refused = Counter(
            "gridpay_connections_refused", "Connections refused, by bank and reason", ["bank", "reason"], registry=r)
        self.signed_on = Gauge(
            "gridpay_bank_signed_on", "1 while the bank's channel holds a MAC key", ["bank", "channel"], registry=r)
        self.mac_failures = Counter("gridpay_mac_failures", "Requests whose MAC did not verify", ["bank"], registry=r)
        self.format_errors = Counter(
            "gridpay_format_errors", "Requests answered 30 or dropped as undecodable", ["bank"], registry=r)
        self.dropped = Counter(
            "gridpay_requests_dropped",
            "Frames left unanswered because no answer could be sent: undecodable (7, 11, 32 not found, "
            "docs/spec/INTERFACE.md §6), unanswerable (found but unusable: MTI, TPDU, identity fields), "
            "response (a response other than 0810 sent to the gateway), limit (its bank at max_connections: "
            "the connection closes); by the connection's bank",
            ["bank", "reason"], registry=r)
        self.duplicates = Counter(
            "gridpay_duplicates_replayed", "Repeated requests answered from the stored response", ["bank"], registry=r)
        self.unanswered = Counter(
            "gridpay_unanswered_requests",
            "Payments and reversals left unanswered: whether they were applied was not known by the bank's timeout",
            ["bank"], registry=r)
        self.commit_seconds = Histogram(
            "gridpay_db_commit_seconds", "Duration of one group commit", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "gridpay_db_batch_size", "Postings per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.db_up = Gauge("gridpay_db_up", "1 when the last database check succeeded", registry=r)
        self.listeners_up = Gauge("gridpay_listeners_up", "Listening ports open", registry=r)
        self.child = LabelCache()

    def answered(self, bank: str, mti: str, processing_code: str, response_code: str, seconds: float) -> None:
        """One request answered: counted by its labels and timed."""
        self.child(self.transactions, bank, mti, processing_code, response_code).inc()
        self.child(self.latency, bank, mti).observe(seconds)

    def on_commit(self, batch_size: int, seconds: float) -> None:
        """Group-commit hook; called from the committer's thread (prometheus-client is thread-safe)."""
        self.batch_size.observe(batch_size)
        self.commit_seconds.observe(seconds)
