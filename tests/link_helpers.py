"""Helpers of the counter-link tests: a bank end that keeps what it is sent, metrics summed over
labels, and the daemon's log written to a file a test can measure."""
import logging

from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import Factory

from config.settings import Settings
from gateway import txlog
from gateway.sim.client import CounterClient
from gateway_harness import Bank, settings_tree, set_zmk_env
from iso8583_specs import codec


def link_settings(url, gateway=None, **banks) -> Settings:
    set_zmk_env()
    tree = settings_tree(url, **banks)
    tree["gateway"].update(gateway or {})
    return Settings.model_validate(tree)


class Tally(CounterClient):
    """A bank's end that also keeps every message the gateway sent it."""

    def __init__(self, dialect):
        super().__init__(dialect)
        self.seen = []
        self._tap = dialect.framer(65535)

    def dataReceived(self, data: bytes) -> None:
        for frame in self._tap.feed(data):
            if not frame.keepalive:
                self.seen.append(codec.decode(self.dialect, frame.message))
        super().dataReceived(data)


async def tallied(gw, code="01020000") -> Bank:
    """A connection of the bank that records what it is sent."""
    bank = Bank(reactor, gw, code)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", gw.port_of(bank.listener))
    bank.client = await endpoint.connect(Factory.forProtocol(lambda: Tally(bank.dialect)))
    return bank


async def answer_to(bank: Bank, iso: bytes, fields: dict):
    """The gateway's answer; a request left unanswered fails the test after 10 s (a hang guard)."""
    return await bank.client.request(iso, (fields["7"], fields["11"], fields["32"])).addTimeout(10, reactor)


def expect(bank: Bank, fields: dict) -> defer.Deferred:
    """The answer to a request whose bytes the test writes itself."""
    d = defer.Deferred()
    bank.client.waiting[(fields["7"], fields["11"], fields["32"])] = (d, 0.0)
    return d


def sample_sum(gw, name: str, **labels) -> float:
    """A metric's samples with these labels, summed over its other labels."""
    return sum(sample.value for metric in gw.metrics.registry.collect() for sample in metric.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


class LogFile:
    """The daemon's log format on the root logger, into a file whose growth a test can measure."""

    def __init__(self, path):
        self.path = path
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter(txlog.LINE_FORMAT))
        self.root = logging.getLogger()
        self.level = self.root.level
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.INFO)

    def size(self) -> int:
        txlog.flush()
        self.handler.flush()
        return self.path.stat().st_size

    def close(self) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.level)
        self.handler.close()
