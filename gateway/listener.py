"""A counter-channel listening port: who may connect, how many, and with what timers."""
from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass

from twisted.internet.protocol import ServerFactory

from gateway.counter_service import CHANNEL, Link
from gateway.protocol import CounterProtocol
from gateway.tls import banks_certified, peer_common_name
from iso8583_specs.dialects import get_dialect

log = logging.getLogger("gridpay.listener")


@dataclass(frozen=True)
class LinkLimits:
    idle_timeout_s: float
    echo_interval_s: float
    frame_timeout_s: float
    max_outstanding: int   # requests of the link in the gateway at once


class ConnectionCounts:
    """Open connections per bank, shared by every listener, against each bank's maximum."""

    def __init__(self, directory, metrics):
        self.directory = directory
        self.metrics = metrics
        self.open = Counter()

    def admit(self, bank: str) -> bool:
        if self.open[bank] >= self.directory.config(bank).max_connections:
            self.metrics.connections_refused.labels(bank, "limit").inc()
            return False
        self.open[bank] += 1
        self.metrics.connections.labels(bank).set(self.open[bank])
        return True

    def release(self, bank: str) -> None:
        self.open[bank] -= 1
        self.metrics.connections.labels(bank).set(self.open[bank])


class CounterFactory(ServerFactory):
    def __init__(self, listener_cfg, gateway):
        self.cfg = listener_cfg
        self.gateway = gateway
        self.reactor = gateway.reactor
        self.clock = gateway.clock
        self.service = gateway.service
        self.metrics = gateway.metrics
        self.directory = gateway.directory
        self.counts = gateway.counts
        self.protocols: set[CounterProtocol] = set()
        banks = [b for b in listener_cfg.banks if CHANNEL in self.directory.channels(b)]
        self.networks = {b: [ipaddress.ip_network(n, strict=False) for n in self.directory.config(b).allowed_networks]
                         for b in banks}
        self.dialect = get_dialect(listener_cfg.dialect)
        self.tls = bool(listener_cfg.tls_cert_file)
        self._limits: dict[object, LinkLimits] = {}

    def buildProtocol(self, addr):
        if self.gateway.draining:
            return None
        candidates = self._banks_for(addr.host)
        if not candidates:
            self.metrics.connections_refused.labels("unknown", "network").inc()
            log.warning("%s: no bank of listener %s may connect from there", addr.host, self.cfg.name)
            return None
        sole = candidates[0] if len(candidates) == 1 else None
        link = Link(allowed_banks=frozenset(candidates), dialect=self.directory.dialect(sole) if sole else self.dialect)
        # Over TLS the address proves nothing yet: the link counts once its handshake and certificate say whose it is.
        if sole and not self.tls and not self.counts.admit(sole):
            log.warning("%s: bank %s is at its connection limit", addr.host, sole)
            return None
        link.bank = None if self.tls else sole
        max_frame = max(self.directory.config(b).max_frame for b in candidates)
        proto = CounterProtocol(self, link, max_frame)
        link.claim = lambda bank: self.claim(proto, bank)
        self.protocols.add(proto)
        return proto

    def _banks_for(self, host: str) -> list[str]:
        ip = ipaddress.ip_address(host)
        return [b for b, nets in self.networks.items() if any(ip in n for n in nets)]

    def certified(self, proto: CounterProtocol) -> bool:
        """After the TLS handshake: narrow the link's banks to those its client certificate may speak
        for; a link left with one bank is that bank's from now on (and counts against it)."""
        subject = peer_common_name(proto.transport)
        allowed = banks_certified(proto.link.allowed_banks, subject,
                                  lambda b: self.directory.config(b).client_cert_subject)
        if not allowed:
            self.refused(proto.link, "certificate")
            log.warning("%s: client certificate %r is not one its banks may use", proto.who(), subject)
            return False
        proto.link.allowed_banks = allowed
        return len(allowed) > 1 or self.claim(proto, next(iter(allowed)))

    def claim(self, proto: CounterProtocol, bank: str) -> bool:
        """The link is ``bank``'s: counted against its max_connections, or closed if the bank is at it."""
        if not self.counts.admit(bank):
            log.warning("%s: bank %s is at its connection limit, closing", proto.who(), bank)
            proto.transport.loseConnection()
            return False
        proto.link.bank = bank
        return True

    def refused(self, link: Link, reason: str) -> None:
        sole = next(iter(link.allowed_banks)) if len(link.allowed_banks) == 1 else "unknown"
        self.metrics.connections_refused.labels(link.bank or sole, reason).inc()

    def connection_closed(self, proto: CounterProtocol) -> None:
        self.protocols.discard(proto)
        if proto.link.bank is not None:
            self.counts.release(proto.link.bank)

    def request_done(self) -> None:
        self.gateway.request_done()

    def limits(self, link: Link) -> LinkLimits:
        """The link's timers and cap (looked up on every read, so worked out once per bank or set of
        banks). Until its bank is known a link gets the strictest of its banks' values."""
        key = link.bank or link.allowed_banks
        if key not in self._limits:
            self._limits[key] = self._worked_out(link)
        return self._limits[key]

    def _worked_out(self, link: Link) -> LinkLimits:
        banks = [link.bank] if link.bank else sorted(link.allowed_banks)
        cfgs = [self.directory.config(b) for b in banks]
        return LinkLimits(idle_timeout_s=min(c.idle_timeout_s for c in cfgs),
                          echo_interval_s=self.gateway.settings.gateway.echo_interval_s,
                          frame_timeout_s=min(c.frame_timeout_s for c in cfgs),
                          max_outstanding=min(c.max_outstanding_requests for c in cfgs))
