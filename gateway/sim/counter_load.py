"""The bank-counter simulator and load generator (``gridpay sim counter``).

It signs on, decrypts its MAK under the ZMK, and runs a weighted mix of operations over
many connections, at a target rate or as fast as it can:

- pay:       inquiry (0100) for a customer, then a cash payment (0200) of exactly the total due
- reverse:   a 0420 for one of this run's payments, under an RRN of its own
- repeat:    the exact bytes of one of this run's payments sent again (must get the same answer)
- malformed: a payment with letters in field 4 (must get 30 with ER)

Every answer is checked against what was sent: the MAC, the echoed fields and the
expected response code; an inquiry's answer also against docs/spec/INTERFACE.md §4.3 (``BC`` counts every unpaid bill,
listed or not, and field 4 covers them all). Every payment and reversal carries an RRN of its own
(§4.7: an RRN the bank used before on the same business date gets 94); the inquiry before a
payment shares the payment's, as inquiries are not checked. It prints payments/s, messages/s,
latency percentiles and counts by response code; any mismatch is listed and makes the exit
status non-zero.

Whatever the gateway does, a run ends and reports: every request has ``timeout`` seconds for its
answer. A request not answered in time, or whose connection closes first, is counted unanswered;
a connection with a request not answered in time is closed (stuck: its other requests are given
up too), and a closed connection ends its share of the run. So a run ends at most ``timeout``
seconds after its last operation began (``duration``, ``count``, or the last connection gone).
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

from twisted.internet import defer, task

from gateway.sim.client import connect
from iso8583_specs import codec, shapes
from iso8583_specs import keys as wire_keys
from iso8583_specs.errors import MessageError
from iso8583_specs.links import RequestTimedOut, Rrns, Stans, network_request, times_at
from config.clock import Clock, as_clock
from iso8583_specs.shapes import OriginalData
from iso8583_specs.tlv import Bill

OPS = ("pay", "reverse", "repeat", "malformed")
BAD_AMOUNT = "987654321012"  # patched to carry a letter on the wire


@dataclass
class Mix:
    pay: int = 100
    reverse: int = 0
    repeat: int = 0
    malformed: int = 0

    @classmethod
    def parse(cls, text: str) -> "Mix":
        """``pay=90,reverse=4,repeat=3,malformed=3``"""
        weights = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name not in OPS or not value.isdigit():
                raise ValueError(f"mix item {part!r}: expected one of {', '.join(OPS)} = a whole number")
            weights[name] = int(value)
        return cls(**weights)


@dataclass
class Report:
    started: float = 0.0
    ended: float = 0.0
    codes: Counter = field(default_factory=Counter)
    ops: Counter = field(default_factory=Counter)
    latencies: list = field(default_factory=list)
    payment_latencies: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    approved: list = field(default_factory=list)      # (customer, amount, receipt, rrn) of every 00 payment
    reversed: list = field(default_factory=list)      # receipts of payments this run reversed with 00
    messages: int = 0
    unanswered: int = 0          # requests sent that got no answer in time, or lost their connection first
    connections_lost: int = 0    # connections closed before the run ended (by the gateway, or stuck)

    @property
    def clean(self) -> bool:
        return not (self.mismatches or self.unanswered or self.connections_lost)

    @property
    def seconds(self) -> float:
        return max(self.ended - self.started, 1e-9)

    def percentile(self, values: list, q: float) -> float:
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def summary(self) -> dict:
        lat = self.latencies
        return {
            "seconds": round(self.seconds, 3), "payments": len(self.approved),
            "payments_per_s": round(len(self.approved) / self.seconds, 1),
            "messages": self.messages, "messages_per_s": round(self.messages / self.seconds, 1),
            "latency_ms": {q: round(self.percentile(lat, p), 2) for q, p in
                           (("p50", .5), ("p95", .95), ("p99", .99), ("max", 1.0))},
            "payment_latency_ms": {q: round(self.percentile(self.payment_latencies, p), 2) for q, p in
                                   (("p50", .5), ("p95", .95), ("p99", .99), ("max", 1.0))},
            "codes": dict(sorted(self.codes.items())), "ops": dict(self.ops),
            "mismatches": len(self.mismatches), "unanswered": self.unanswered,
            "connections_lost": self.connections_lost,
        }

    def text(self) -> str:
        s = self.summary()
        lines = [
            f"{s['payments']} payments approved in {s['seconds']} s: {s['payments_per_s']} payments/s, "
            f"{s['messages_per_s']} messages/s",
            "latency per message (ms): " + "  ".join(f"{k} {v}" for k, v in s["latency_ms"].items()),
            "latency per payment 0200 (ms): " + "  ".join(f"{k} {v}" for k, v in s["payment_latency_ms"].items()),
            "responses by code: " + "  ".join(f"{k}={v}" for k, v in s["codes"].items()),
            "operations: " + "  ".join(f"{k}={v}" for k, v in s["ops"].items()),
        ]
        if self.unanswered or self.connections_lost:
            lines.append(f"{self.unanswered} requests UNANSWERED, {self.connections_lost} connections lost")
        if self.mismatches:
            lines.append(f"{len(self.mismatches)} MISMATCHES:")
            lines += [f"  {m}" for m in self.mismatches[:20]]
        else:
            lines.append(f"every one of {s['messages']} answers matched what was sent")
        return "\n".join(lines)


class Mismatch(Exception):
    pass


class Unanswered(Exception):
    """A request got no answer (in time), or its connection is closed: that connection's work is over."""


class CounterSimulator:
    def __init__(self, reactor, host, port, dialect, bank, zmk: bytes, customers, *, connections=4, window=16,
                 rate=0.0, count=None, duration=None, mix=Mix(), seed=1, nii_gateway="0000", nii_bank="0001",
                 terminal="TERM0001", branch="BR4401000000001", timeout=30.0, clock: Clock | None = None):
        self.reactor, self.host, self.port, self.dialect = reactor, host, port, dialect
        self.clock = as_clock(clock, reactor)   # the counter's local time: fields 7, 12, 13
        self.bank, self.zmk = bank, zmk
        self.customers = iter(customers)
        self.connections, self.window, self.rate = connections, window, rate
        self.count, self.duration, self.timeout = count, duration, timeout
        self.mix, self.random = mix, random.Random(seed)
        self.niis = {"nii_gateway": nii_gateway, "nii_bank": nii_bank}
        self.terminal, self.branch = terminal, branch
        self.stans = Stans.from_clock(self.clock.seconds())
        self.rrns = Rrns.from_clock(self.clock.seconds())
        self.paid: list[dict] = []
        self.report = Report()
        self.mak: bytes | None = None
        self._next_slot = 0.0
        self._issued = 0
        self._done = False
        self._ending = False
        self._lost: set = set()  # connections gone before the run ended
        self._times_of: tuple[int, dict] = (0, {})

    # --- running ------------------------------------------------------------------------

    async def run(self) -> Report:
        self.report.started = time.perf_counter()
        clients = [await self._connect() for _ in range(self.connections)]
        try:
            try:
                self.mak = await self.sign_on(clients[0])
            except Mismatch as exc:
                self.report.mismatches.append(str(exc))
                return self.report
            except Unanswered:
                return self.report
            self.report.started = time.perf_counter()
            self._next_slot = self.reactor.seconds()
            workers = [defer.ensureDeferred(self._worker(c)) for c in clients for _ in range(self.window)]
            await defer.gatherResults(workers, consumeErrors=True)
        finally:
            self.report.ended = self.report.ended or time.perf_counter()
            self._ending = True
            for c in clients:
                c.transport.loseConnection()
        return self.report

    async def _connect(self):
        client = await connect(self.reactor, self.host, self.port, self.dialect, timeout=self.timeout, **self.niis)
        client.closed.addCallback(lambda _: None if self._ending else self._lose(client))
        return client

    def _lose(self, client) -> None:
        if client not in self._lost:
            self._lost.add(client)
            self.report.connections_lost += 1
        client.transport.loseConnection()

    async def sign_on(self, client) -> bytes:
        fields = network_request(self._times(), self.stans.next(), self.bank, shapes.SIGN_ON)
        answer = await self._send(client, "0800", fields, mac=False)
        self._expect(answer, "00", "sign-on")
        return wire_keys.read_sign_on_field48(self.zmk, answer.message.fields["48"])

    async def _worker(self, client) -> None:
        while not self._finished():
            self._issued += 1
            await self._throttle()
            op = self._choose()
            self.report.ops[op] += 1
            try:
                await getattr(self, f"_{op}")(client)
            except Mismatch as exc:
                self.report.mismatches.append(str(exc))
            except Unanswered:
                return
        self.report.ended = self.report.ended or time.perf_counter()

    def _finished(self) -> bool:
        if self._done:
            return True
        if self.count is not None and self._issued >= self.count:
            return True
        if self.duration is not None and time.perf_counter() - self.report.started >= self.duration:
            return True
        return False

    async def _throttle(self) -> None:
        if self.rate <= 0:
            return
        now = self.reactor.seconds()
        self._next_slot = max(self._next_slot, now) + 1.0 / self.rate
        if self._next_slot - now > 0.0005:
            await task.deferLater(self.reactor, self._next_slot - now)

    def _choose(self) -> str:
        weights = [self.mix.pay, self.mix.reverse if self.paid else 0, self.mix.repeat if self.paid else 0,
                   self.mix.malformed]
        return self.random.choices(OPS, weights=weights)[0] if sum(weights) else "pay"

    # --- operations ---------------------------------------------------------------------

    async def _pay(self, client) -> None:
        customer = next(self.customers, None)
        if customer is None:
            self._done = True
            return
        rrn = self._rrn()
        common = {**self._head(), "37": rrn, "41": self.terminal, "42": self.branch, "49": "156"}
        inquiry = await self._send(client, "0100", {**common, "3": "310000", "48": f"CN{len(customer):03d}{customer}"})
        self._expect(inquiry, "00", f"inquiry {customer}")
        due = check_inquiry(inquiry.message, f"inquiry {customer}")
        if due == 0:
            return
        fields = {**self._head(), "3": "500000", "4": f"{due:012d}", "37": rrn, "41": self.terminal,
                  "42": self.branch, "49": "156", "48": f"CN{len(customer):03d}{customer}PM00201"}
        iso = codec.encode(self.dialect, "0200", fields, mac_key=self.mak)
        answer = await self._request(client, iso, fields)
        self.report.payment_latencies.append(answer.latency)
        self._expect(answer, "00", f"payment {customer}", echoed=("4", "37", "41", "42", "49", "3"))
        receipt = answer.message.tlv.get("RN")
        if not receipt:
            raise Mismatch(f"payment {customer}: approved without a receipt number")
        self.paid.append({"iso": iso, "fields": fields, "customer": customer, "amount": due, "receipt": receipt})
        self.report.approved.append((customer, due, receipt, rrn))

    async def _reverse(self, client) -> None:
        original = self.paid.pop(self.random.randrange(len(self.paid)))
        of = original["fields"]
        fields = {**self._head(), "3": "500000", "4": of["4"], "37": self._rrn(), "41": self.terminal,
                  "42": self.branch, "49": "156", "48": f"CN{len(original['customer']):03d}{original['customer']}",
                  "90": OriginalData("0200", of["11"], of["7"], str(int(of["32"]))).encode()}
        answer = await self._send(client, "0420", fields)
        self._expect(answer, "00", f"reversal of {original['receipt']}", echoed=("4", "90"))
        self.report.reversed.append(original["receipt"])

    async def _repeat(self, client) -> None:
        original = self.random.choice(self.paid)
        answer = await self._request(client, original["iso"], original["fields"])
        self._expect(answer, "00", f"repeat of {original['receipt']}")
        if answer.message.tlv.get("RN") != original["receipt"]:
            raise Mismatch(f"repeat of {original['receipt']}: answered with receipt {answer.message.tlv.get('RN')}")

    async def _malformed(self, client) -> None:
        fields = {**self._head(), "3": "500000", "4": BAD_AMOUNT, "37": self._rrn(), "41": self.terminal,
                  "42": self.branch, "49": "156", "48": "CN0010PM00201"}
        iso = corrupt_amount(self.dialect, codec.encode(self.dialect, "0200", fields, mac_key=self.mak))
        answer = await self._request(client, iso, fields)
        self._expect(answer, "30", "malformed payment")
        if not (answer.message.tlv.get("ER") or "").startswith("field 4"):
            raise Mismatch(f"malformed payment: ER {answer.message.tlv.get('ER')!r} does not name field 4")

    # --- plumbing -----------------------------------------------------------------------

    def _head(self) -> dict[str, str]:
        return {**self._times(), "11": self.stans.next(), "32": self.bank}

    def _times(self) -> dict[str, str]:
        """Fields 7, 12 and 13, which change once a second: worked out once a second."""
        second = int(self.clock.seconds())
        if second != self._times_of[0]:
            self._times_of = (second, times_at(self.clock.local()))
        return self._times_of[1]

    def _rrn(self) -> str:
        return self.rrns.next()

    async def _send(self, client, mti, fields, mac=True):
        iso = codec.encode(self.dialect, mti, fields, mac_key=self.mak if mac else None)
        return await self._request(client, iso, fields)

    async def _request(self, client, iso: bytes, fields: dict):
        if client.closed.called:
            raise Unanswered("connection closed")
        self.report.messages += 1
        try:
            answer = await client.request(iso, (fields["7"], fields["11"], fields["32"]), self.timeout)
        except (ConnectionError, RequestTimedOut) as exc:
            self.report.unanswered += 1
            if isinstance(exc, RequestTimedOut):
                self._lose(client)  # stuck: its other requests are given up too
            raise Unanswered(str(exc)) from None
        self.report.latencies.append(answer.latency)
        self.report.codes[answer.message.fields.get("39", "??")] += 1
        answer.request_fields = fields
        return answer

    def _expect(self, answer, code: str, what: str, echoed: tuple = ()) -> None:
        got = answer.message.fields.get("39")
        if got != code:
            er = ""
            try:
                er = answer.message.tlv.get("ER") or ""
            except Exception:  # noqa: BLE001
                pass
            raise Mismatch(f"{what}: expected {code}, got {got} {er}".rstrip())
        if self.mak and got != "91" and answer.message.mti != "0810":
            if not codec.verify_mac(self.dialect, answer.raw, self.mak):
                raise Mismatch(f"{what}: the answer's MAC does not verify")
        for f in echoed:
            if answer.message.fields.get(f) != answer.request_fields.get(f):
                raise Mismatch(f"{what}: field {f} not echoed ({answer.message.fields.get(f)!r})")


def check_inquiry(message, what: str) -> int:
    """The total due of an 0110 (field 4), checked against its field 48 (§4.3): ``BC`` counts every
    unpaid bill and the ``BI`` listed are as many as fit; field 4, the total of all of them less
    the prepaid balance, is that of the listed ones when all are listed, at least that otherwise."""
    due = int(message.fields["4"])
    try:
        tlv = message.tlv
        shapes.check_count(tlv, message.fields["48"], "BC", "BI")
        listed = [Bill.parse(value) for value in tlv.getall("BI")]
        owed = max(0, sum(b.principal + b.penalty for b in listed) - int(tlv.get("PB") or 0))
    except (MessageError, KeyError, ValueError, TypeError) as exc:
        raise Mismatch(f"{what}: {exc}") from None
    if due < owed or (due != owed and len(listed) == int(tlv.get("BC"))):
        raise Mismatch(f"{what}: field 4 {due} does not fit its {len(listed)} of {tlv.get('BC')} bills listed")
    return due


def corrupt_amount(dialect, iso: bytes) -> bytes:
    """Put a letter into field 4 of an encoded message (ASCII: a character; BCD: a nibble)."""
    if BAD_AMOUNT.encode() in iso:
        return iso.replace(BAD_AMOUNT.encode(), BAD_AMOUNT[:-1].encode() + b"X", 1)
    packed = bytes.fromhex(BAD_AMOUNT)
    assert packed in iso, "field 4 not found to corrupt"
    return iso.replace(packed, packed[:-1] + b"\x1a", 1)
