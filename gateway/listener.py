"""A counter-channel listening port: who may connect, how many, and with what timers."""
from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass

from twisted.internet.protocol import ServerFactory

from gateway.counter import CHANNEL, Link
from gateway.protocol import CounterProtocol
from gateway.tls import banks_certified, peer_common_name
from iso8583_specs.dialects import get_dialect

log = logging.getLogger("gridpay.listener")


@dataclass(frozen=True)
class Timing:
    idle_timeout_s: float
    echo_interval_s: float
    frame_timeout_s: float


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
        self._timings: dict[object, Timing] = {}

    def buildProtocol(self, addr):
        if self.gateway.draining:
            return None
        candidates = self._banks_for(addr.host)
        if not candidates:
            self.metrics.connections_refused.labels("unknown", "network").inc()
            log.warning("%s: no bank of listener %s may connect from there", addr.host, self.cfg.name)
            return None
        bank = candidates[0] if len(candidates) == 1 else None
        if bank is not None and not self.counts.admit(bank):
            log.warning("%s: bank %s is at its connection limit", addr.host, bank)
            return None
        dialect = self.directory.dialect(bank) if bank else self.dialect
        link = Link(allowed_banks=frozenset(candidates), dialect=dialect, bank=bank)
        max_frame = max(self.directory.config(b).max_frame for b in candidates)
        proto = CounterProtocol(self, link, max_frame)
        self.protocols.add(proto)
        return proto

    def _banks_for(self, host: str) -> list[str]:
        ip = ipaddress.ip_address(host)
        return [b for b, nets in self.networks.items() if any(ip in n for n in nets)]

    def certificate_admits(self, proto: CounterProtocol) -> bool:
        """On a TLS listener: narrow the connection's banks to those its client certificate may speak for."""
        if not self.cfg.tls_cert_file:
            return True
        subject = peer_common_name(proto.transport)
        allowed = banks_certified(proto.link.allowed_banks, subject,
                                  lambda b: self.directory.config(b).client_cert_subject)
        if not allowed or (proto.link.bank is not None and proto.link.bank not in allowed):
            self.metrics.connections_refused.labels(proto.link.bank or "unknown", "certificate").inc()
            log.warning("client certificate %r is not one the connecting bank may use", subject)
            return False
        proto.link.allowed_banks = allowed
        return True

    def identified(self, proto: CounterProtocol, bank: str) -> None:
        """A connection shared by several banks' networks says, with field 32, whose it is."""
        if self.counts.admit(bank):
            proto.link.bank = bank
        else:
            proto.transport.loseConnection()

    def connection_closed(self, proto: CounterProtocol) -> None:
        self.protocols.discard(proto)
        if proto.link.bank is not None:
            self.counts.release(proto.link.bank)

    def request_done(self) -> None:
        self.gateway.request_done()

    def timing(self, link: Link) -> Timing:
        """The link's timers (looked up on every read, so worked out once per bank or set of banks)."""
        key = link.bank or link.allowed_banks
        if key not in self._timings:
            self._timings[key] = self._timing(link)
        return self._timings[key]

    def _timing(self, link: Link) -> Timing:
        banks = [link.bank] if link.bank else sorted(link.allowed_banks)
        cfgs = [self.directory.config(b) for b in banks]
        return Timing(idle_timeout_s=min(c.idle_timeout_s for c in cfgs),
                      echo_interval_s=self.gateway.settings.gateway.echo_interval_s,
                      frame_timeout_s=min(c.frame_timeout_s for c in cfgs))
