"""The gateway daemon: listeners, the ops HTTP port, the ledger, and an orderly stop.

``Gateway`` is usable in-process (tests run it on the test's reactor with real sockets) and
is what ``gridpay serve`` runs. Stopping (SIGTERM) stops accepting, lets requests in flight
finish, closes connections, drains the ledger's worker processes, and only then lets the
process exit.
"""
from __future__ import annotations

import logging

from twisted.internet import defer, endpoints, task, threads

from gateway import txlog
from gateway.bank_directory import BankDirectory
from gateway.counter_service import CounterService
from gateway.gateway_metrics import GatewayMetrics
from gateway.ledger_port import LedgerPort
from gateway.listener import ConnectionCounts, CounterFactory
from gateway.tls import server_options
from config.clock import Clock
from ledger.db import make_engine
from ledger.key_store import KeyStore
from ledger.key_store_db import DbKeyBackend
from runtime.gc_settle import settle_gc
from runtime.ops_site import ops_site

log = logging.getLogger("gridpay.gateway")
TXLOG_FLUSH_S = 0.2  # transaction log lines reach the file at most this late (gateway.txlog)
KEY_RELOAD_S = 1.0   # a key another instance issued is this gateway's current key at most this late


class Gateway:
    def __init__(self, settings, reactor, engine=None, clock=None):
        self.settings = settings
        self.reactor = reactor
        # now, business dates, timers and key grace: on the reactor, or on the twisted.internet.task.Clock
        # a test hands in (sockets stay on the reactor)
        self.clock = Clock.of(settings.business, timer=clock or reactor)
        self.metrics = GatewayMetrics()
        self.directory = BankDirectory(settings)
        self.engine = engine or make_engine(settings.database_url(), pool_size=settings.database.pool_size,
                                            statement_timeout_s=settings.database.statement_timeout_s)
        self.ledger = LedgerPort(reactor, self.engine, settings, self.clock, on_commit=self.metrics.on_commit)
        backend = DbKeyBackend(self.engine, self.directory.zmk, self.clock)
        self.keys = KeyStore(self.clock, grace_s=settings.gateway.key_grace_s, backend=backend)
        self.service = CounterService(self.directory, self.keys, self.ledger, self.metrics, self.clock,
                                      self.directory.zmk)
        self.counts = ConnectionCounts(self.directory, self.metrics)
        self.factories: list[CounterFactory] = []
        self.ports = []
        self.ops_port = None
        self.draining = False
        self.watcher = None
        self._idle_waiters: list[defer.Deferred] = []
        self.txlog_flush = task.LoopingCall(txlog.flush)
        self.txlog_flush.clock = reactor
        self.key_reload = task.LoopingCall(self.reload_keys)
        self.key_reload.clock = reactor

    # --- start --------------------------------------------------------------------------

    @defer.inlineCallbacks
    def start(self):
        yield self.ledger_ready()
        self.txlog_flush.start(TXLOG_FLUSH_S, now=False)
        self.key_reload.start(KEY_RELOAD_S, now=False)
        yield self.ledger.start()
        for cfg in self.settings.gateway.listeners:
            factory = CounterFactory(cfg, self)
            port = yield self._endpoint(cfg).listen(factory)
            self.factories.append(factory)
            self.ports.append(port)
            log.info("listener %s on %s:%d (%s) for banks %s", cfg.name, cfg.host, port.getHost().port,
                     cfg.dialect, ",".join(cfg.banks))
        self.metrics.listeners_up.set(len(self.ports))
        self.show_configured_banks()
        gw = self.settings.gateway
        site = ops_site(self.metrics.registry, self.metrics.db_up, self.engine, self.readiness)
        self.ops_port = yield endpoints.TCP4ServerEndpoint(self.reactor, gw.metrics_port, interface=gw.metrics_host).listen(site)
        log.info("metrics and health on http://%s:%d/metrics", gw.metrics_host, self.ops_port.getHost().port)
        settle_gc()
        if gw.watch_drop_dir:
            self.start_watcher()

    def start_watcher(self) -> None:
        """The drop directory's watcher (``gridpay watch``) inside this process."""
        from ledger.recon.drop_files import MIB
        from ledger.recon.report_labels import options_of
        from ledger.recon.watch import DropWatcher

        self.watcher = DropWatcher(self.engine, self.settings.drop_dir, actor="system:gateway-watch", clock=self.clock,
                                   max_file_bytes=self.settings.watch.max_file_mib * MIB,
                                   hold_until_day_ended=self.settings.watch.hold_bank_files_until_day_ended,
                                   report_options=options_of(self.settings, clock=self.clock))
        self.watcher.start(self.reactor)
        log.info("watching drop directory %s", self.settings.drop_dir)

    def ledger_ready(self):
        """The configured banks have their rows (payments refer to them)."""
        from ledger.bank_rows import ensure_banks

        def ensure():
            with self.engine.begin() as conn:
                ensure_banks(conn, {code: bank.name for code, bank in self.settings.banks.items()})

        return threads.deferToThread(ensure)

    def _endpoint(self, cfg):
        if not cfg.tls_cert_file:
            return endpoints.TCP4ServerEndpoint(self.reactor, cfg.port, interface=cfg.host, backlog=256)
        return endpoints.SSL4ServerEndpoint(self.reactor, cfg.port, server_options(cfg), interface=cfg.host,
                                            backlog=256)

    def listeners_up(self) -> tuple[int, int]:
        """(listening, configured) for /readyz: a draining gateway is not ready for new links."""
        return (0 if self.draining else len(self.ports)), len(self.settings.gateway.listeners)

    def show_configured_banks(self) -> None:
        """Every counter bank has its series from the start, so 'never connected' can alert."""
        for code in self.settings.banks:
            if "counter" in self.directory.channels(code):
                self.metrics.connections.labels(code).set(0)
                self.metrics.unanswered.labels(code)
                self.metrics.signed_on.labels(code, "counter").set(1 if self.keys.signed_on(code, "counter") else 0)

    def reload_keys(self) -> defer.Deferred:
        """The counter banks' keys as stored (another gateway may have answered a sign-on): read on
        the pool, taken on the reactor, so answers are MACed with the bank's newest key (docs/spec/INTERFACE.md §4.1: a
        new MAK replaces the old one on all its connections) and a request MACed with the key it
        replaced is accepted for the grace period here too."""
        banks = [code for code in self.settings.banks if "counter" in self.directory.channels(code)]

        def load():
            return self.keys.backend.newer("counter", {code: self.keys.version(code, "counter") for code in banks})

        def take(states):
            for code, state in states.items():
                self.keys.take(code, "counter", state)

        d = self.ledger.run(load)
        d.addCallbacks(take, lambda f: log.warning("reloading MAC keys failed: %s", f.getErrorMessage()))
        return d

    def port_of(self, name: str) -> int:
        for factory, port in zip(self.factories, self.ports):
            if factory.cfg.name == name:
                return port.getHost().port
        raise KeyError(name)

    def readiness(self) -> tuple[bool, dict]:
        """/readyz, beside the database: every listener up and commits completing."""
        up, wanted = self.listeners_up()
        stalled = self.commits_stalled()
        return up == wanted and stalled is None, {"commits": stalled or "ok",
                                                   "listeners": {"up": up, "configured": wanted}}

    def commits_stalled(self) -> str | None:
        """Why the gateway cannot post payments now though the database answers a probe (a lock
        held elsewhere, say): its group commit has been on one batch for longer than the banks'
        shortest request timeout, so no bank would get its answer in time; or the latest posting
        failed (96, or no answer) within the longest, and none has succeeded since."""
        timeouts = [bank.request_timeout_s for bank in self.settings.banks.values()] or [10.0]
        busy = self.ledger.poster.working_for()
        if busy > min(timeouts):
            return f"one group commit has taken {busy:.1f} s, longer than a bank's request timeout ({min(timeouts):g} s)"
        failed = self.ledger.last_failure
        if failed is not None and self.reactor.seconds() - failed[0] <= max(timeouts):
            return f"the latest posting failed {self.reactor.seconds() - failed[0]:.1f} s ago: {failed[1]}"
        return None

    # --- stop ---------------------------------------------------------------------------

    def request_done(self) -> None:
        if self.draining and not self.in_flight():
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def in_flight(self) -> int:
        return sum(len(p.pending) for f in self.factories for p in f.protocols)

    def abandon(self) -> None:
        """After a failed start: stop the timers and workers already running, so the process can exit."""
        for loop in (self.key_reload, self.txlog_flush):
            if loop.running:
                loop.stop()
        self.ledger.abandon()

    @defer.inlineCallbacks
    def stop(self):
        """Stop accepting, finish what is in flight, close every connection, drain the ledger."""
        self.draining = True
        if self.watcher is not None:
            yield self.watcher.stop()
        if self.key_reload.running:  # no new key reads on the pool, which is about to stop
            self.key_reload.stop()
        yield defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
        self.metrics.listeners_up.set(0)
        for factory in self.factories:  # requests not yet read stay unread: the bank will time them out
            for proto in factory.protocols:
                proto.transport.pauseProducing()
        if self.in_flight():
            waiter = defer.Deferred()
            self._idle_waiters.append(waiter)
            waiter.addTimeout(self.settings.gateway.drain_timeout_s, self.reactor)
            try:
                yield waiter
            except defer.TimeoutError:
                log.error("drain timed out with %d requests in flight", self.in_flight())
        for factory in self.factories:
            for proto in list(factory.protocols):
                proto.transport.loseConnection()
        if self.ops_port is not None:
            yield self.ops_port.stopListening()
        yield self.ledger.stop(timeout=self.settings.gateway.drain_timeout_s)
        if self.txlog_flush.running:
            self.txlog_flush.stop()
        txlog.flush()
        log.info("gateway stopped")
