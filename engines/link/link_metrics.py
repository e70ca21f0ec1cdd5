"""The debit link's metrics hooks: ``LinkMetrics`` (does nothing) and ``PrometheusLinkMetrics``."""
from __future__ import annotations


class LinkMetrics:
    """Hooks the link calls; the default does nothing. Subclass, or use ``PrometheusLinkMetrics``."""

    def sent(self, bank: str, mti: str) -> None: ...
    def answered(self, bank: str, mti: str, code: str, seconds: float) -> None: ...
    def timed_out(self, bank: str, mti: str, unknown: bool) -> None: ...
    def not_sent(self, bank: str, mti: str, reason: str) -> None: ...
    def late(self, bank: str, mti: str) -> None: ...
    def rejected_answer(self, bank: str, reason: str) -> None: ...  # bad_mac, bad_response, unmatched
    def connections(self, bank: str, open_: int, ready: int) -> None: ...
    def signed_on(self, bank: str, ok: bool) -> None: ...
    def reconnect(self, bank: str, delay: float) -> None: ...
    def in_flight(self, bank: str, in_flight: int, queued: int) -> None: ...


class PrometheusLinkMetrics(LinkMetrics):
    """The hooks as Prometheus metrics in the given registry (one instance per registry,
    shared by all banks' links: every metric is labelled by bank)."""

    def __init__(self, registry):
        from prometheus_client import Counter as C, Gauge, Histogram

        from runtime.metric_labels import LATENCY_BUCKETS, LabelCache

        r = registry
        self._sent = C("gridpay_debit_requests_sent", "Debit-channel requests written", ["bank", "mti"], registry=r)
        self._answered = C("gridpay_debit_answers", "Answers matched to a request", ["bank", "mti", "response_code"],
                           registry=r)
        self._latency = Histogram("gridpay_debit_answer_seconds", "Request written to answer read", ["bank", "mti"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self._timeouts = C("gridpay_debit_timeouts", "Requests with no answer (outcome unknown)",
                           ["bank", "mti", "kind"], registry=r)
        self._not_sent = C("gridpay_debit_not_sent", "Requests failed before being written", ["bank", "mti", "reason"],
                           registry=r)
        self._late = C("gridpay_debit_late_answers", "Answers that came after their request timed out",
                       ["bank", "mti"], registry=r)
        self._rejected = C("gridpay_debit_answers_rejected", "Answers ignored", ["bank", "reason"], registry=r)
        self._open = Gauge("gridpay_debit_connections", "Open debit connections", ["bank"], registry=r)
        self._ready = Gauge("gridpay_debit_connections_ready", "Signed-on debit connections", ["bank"], registry=r)
        self._signons = C("gridpay_debit_sign_ons", "Sign-ons by outcome", ["bank", "outcome"], registry=r)
        self._reconnects = C("gridpay_debit_reconnects", "Reconnects scheduled", ["bank"], registry=r)
        self._in_flight = Gauge("gridpay_debit_in_flight", "Requests written and not answered", ["bank"], registry=r)
        self._queued = Gauge("gridpay_debit_queued", "Requests waiting for the caps", ["bank"], registry=r)
        self._child = LabelCache()
        self._levels: dict[str, tuple[int, int]] = {}

    def sent(self, bank, mti):
        self._child(self._sent, bank, mti).inc()

    def answered(self, bank, mti, code, seconds):
        self._child(self._answered, bank, mti, code).inc()
        self._child(self._latency, bank, mti).observe(seconds)

    def timed_out(self, bank, mti, unknown):
        self._timeouts.labels(bank, mti, "connection_lost" if unknown else "timeout").inc()

    def not_sent(self, bank, mti, reason):
        self._not_sent.labels(bank, mti, reason).inc()

    def late(self, bank, mti):
        self._late.labels(bank, mti).inc()

    def rejected_answer(self, bank, reason):
        self._rejected.labels(bank, reason).inc()

    def connections(self, bank, open_, ready):
        self._open.labels(bank).set(open_)
        self._ready.labels(bank).set(ready)

    def signed_on(self, bank, ok):
        self._signons.labels(bank, "ok" if ok else "failed").inc()

    def reconnect(self, bank, delay):
        self._reconnects.labels(bank).inc()

    def in_flight(self, bank, in_flight, queued):
        # called on every send and answer: kept here, read by the gauges only when scraped
        if bank not in self._levels:
            self._in_flight.labels(bank).set_function(lambda: self._levels[bank][0])
            self._queued.labels(bank).set_function(lambda: self._levels[bank][1])
        self._levels[bank] = (in_flight, queued)
