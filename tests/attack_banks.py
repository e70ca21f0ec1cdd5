"""The attack suite's banks and sockets: honest banks that check every answer they get, hostile
sockets, and requests made hostile on the wire (MACed again, so only the format checks can stop them).

Honest banks are blocking clients, one request at a time per connection, each waiting for its
answer at most its bank's ``request_timeout_s``: the bank would time out after that (the
functional latency bound). Their latencies are kept for information (p50/p99), never asserted.
"""
from __future__ import annotations

import itertools
import socket
import threading
import time
from select import select as ready_to_read

import iso8583

from iso8583_specs.links import Stans
from gateway_harness import Bank, ZMKS
from iso8583_specs import codec
from iso8583_specs import keys as wire_keys
from iso8583_specs.errors import MessageError
from iso8583_specs.fields import MAC_FIELDS
from iso8583_specs.framing import encode_frame, make_tpdu

_CLIENTS = itertools.count(1)  # each honest client its own STANs and RRNs (docs/spec/INTERFACE.md §4.7: else 94)


# --- sockets ----------------------------------------------------------------------------

class Wire:
    """One blocking connection to a gateway port: frames out, frames in."""

    def __init__(self, port: int, dialect, timeout: float, source: str | None = None, tls=None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        self.dialect = dialect
        self.framer = dialect.framer(65535)
        self.tpdu = make_tpdu("0000", "0001") if dialect.framing.tpdu else None
        self.ready: list = []
        self.closed = False

    def send(self, iso: bytes) -> None:
        self.sock.sendall(encode_frame(self.dialect.framing, iso, self.tpdu))

    def frame(self, deadline: float):
        """The next frame from the gateway; None once it closed; TimeoutError at the deadline."""
        while not self.ready:
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame in time") from None
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return None
            self.ready += [f for f in self.framer.feed(data) if not f.keepalive]
        return self.ready.pop(0)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Unanswered(AssertionError):
    """An honest request got no answer within its bank's request_timeout_s."""


class HonestBank:
    """A bank doing nothing wrong, on a connection of its own: every answer must be right."""

    def __init__(self, gw, code: str, *, listener: str | None = None, source: str | None = None,
                 tls=None):
        self.code = code
        self.build = Bank(None, None, code)      # the in-process harness's request building
        client = next(_CLIENTS)
        self.build.stans = Stans(client * 10_000 % 1_000_000 + 1)
        self.build.rrn = client * 1_000_000      # RRNs apart from the bank's other clients'
        self.timeout = gw.request_timeout(code)
        self.wire = Wire(gw.ports[listener or self.build.listener], self.build.dialect, self.timeout, source, tls)
        self.latencies: list[float] = []
        self.approved: dict[str, tuple[str, int]] = {}   # receipt -> (customer, amount)
        self.problems: list[str] = []

    def ask(self, mti: str, fields: dict, key: bytes | None | bool = True):
        return self.ask_raw(self.build.encode(mti, fields, key), fields)

    def ask_raw(self, iso: bytes, fields: dict):
        """The answer to this request, which must come within the bank's request timeout."""
        started = time.monotonic()
        self.wire.send(iso)
        wanted = (fields["7"], fields["11"], fields["32"])
        while True:
            try:
                frame = self.wire.frame(started + self.timeout)
            except TimeoutError:
                raise Unanswered(f"{self.code}: no answer to {wanted} within {self.timeout} s") from None
            if frame is None:
                raise Unanswered(f"{self.code}: connection closed with {wanted} unanswered")
            message = codec.decode(self.build.dialect, frame.message)
            if message.identity == wanted:
                self.latencies.append(time.monotonic() - started)
                return message
            if message.mti != "0800":
                self.problems.append(f"{self.code}: an answer to nothing asked: {message.mti} {message.identity}")

    def sign_on(self) -> None:
        answer = self.ask("0800", {**self.build.head(), "70": "001"}, key=False)
        assert answer.fields["39"] == "00", answer
        self.build.mak = wire_keys.read_sign_on_field48(bytes.fromhex(ZMKS[self.code]), answer.fields["48"])

    def checked(self, answer, what: str, code: str = "00"):
        if answer.fields.get("39") != code:
            self.problems.append(f"{self.code} {what}: {answer.fields.get('39')} where {code} was due")
        elif not codec.verify_mac(self.build.dialect, answer.raw, self.build.mak):
            self.problems.append(f"{self.code} {what}: the answer's MAC does not verify")
        return answer

    def pay(self, customer: str) -> None:
        """Inquiry, then a payment of exactly the amount due (docs/spec/INTERFACE.md §4.3, §4.4)."""
        due = int(self.checked(self.ask("0100", self.build.inquiry_fields(customer)), "inquiry").fields["4"])
        answer = self.checked(self.ask("0200", self.build.payment_fields(customer, due)), f"payment {customer}")
        if answer.fields.get("39") == "00":
            self.approved[answer.tlv.get("RN")] = (customer, due)

    def close(self) -> None:
        self.wire.close()


class HonestLoad:
    """Honest banks paying customers in threads of their own while the attack runs."""

    def __init__(self, *work: tuple[HonestBank, list[str]]):
        self.work = work
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=w, daemon=True) for w in work]

    def _run(self, bank: HonestBank, customers: list[str]) -> None:
        try:
            for customer in customers:
                if self.stop.is_set():
                    return
                bank.pay(customer)
        except (AssertionError, OSError, MessageError) as exc:
            bank.problems.append(f"{bank.code}: {type(exc).__name__}: {exc}")

    def __enter__(self) -> "HonestLoad":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def finish(self, timeout: float = 300) -> None:
        """Let every honest bank pay all its customers."""
        for t in self.threads:
            t.join(timeout)


def latency_figures(what: str, latencies: list[float]) -> str:
    """p50/p99 in ms, for information only: the bound asserted is each bank's request timeout."""
    ordered = sorted(latencies) or [0.0]
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    line = f"{what}: {len(latencies)} honest answers, p50 {pick(.5):.1f} ms, p99 {pick(.99):.1f} ms"
    print(line)
    return line


def assert_honest_served(*honest: HonestBank) -> None:
    """Every honest request was answered right and in time, and every honest bank got payments made."""
    problems = [p for bank in honest for p in bank.problems]
    assert not problems, "\n".join(problems[:20])
    latency_figures("honest banks", [x for bank in honest for x in bank.latencies])
    assert all(bank.approved for bank in honest), "an honest bank got nothing paid"


def told_of(*honest: HonestBank) -> dict[str, dict[str, tuple[str, int]]]:
    told: dict[str, dict[str, tuple[str, int]]] = {}
    for bank in honest:
        told.setdefault(bank.code, {}).update(bank.approved)
    return told


# --- hostile sockets ----------------------------------------------------------------------

def raw_socket(port: int, source: str | None = None, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the gateway closes (or resets) the connection within ``within`` seconds; whatever it
    sends first is read and dropped."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True
    return False


def closed_of(socks: list[socket.socket], within: float) -> int:
    """How many of these connections the gateway closes within ``within`` seconds (all watched at once)."""
    open_, closed, deadline = list(socks), 0, time.monotonic() + within
    while open_ and time.monotonic() < deadline:
        readable, _, _ = ready_to_read(open_, [], [], max(0.0, deadline - time.monotonic()))
        for sock in readable:
            try:
                gone = not sock.recv(65536)
            except OSError:
                gone = True
            if gone:
                open_.remove(sock)
                closed += 1
    return closed


def answers_to_raw(sock: socket.socket, dialect, data: bytes, wait: float,
                   enough: int | None = None) -> tuple[list, bool]:
    """Send hostile bytes; the messages the gateway answers within ``wait`` s (or until ``enough``
    came), and whether it closed the connection."""
    framer = dialect.framer(65535)
    try:
        sock.sendall(data)
    except OSError:
        return [], True
    answers, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            return answers, True
        if not chunk:
            return answers, True
        answers += [codec.decode(dialect, f.message) for f in framer.feed(chunk) if not f.keepalive]
        if enough is not None and len(answers) >= enough:
            break
    return answers, False


# --- hostile requests ---------------------------------------------------------------------

def remac(build: Bank, iso: bytes) -> bytes:
    """The MAC made again over the (changed) message, as a bank's faulty software would send it."""
    fs, size = build.dialect.fields, build.dialect.fields.mac_len
    return iso[:-size] + fs.mac_wire(build.dialect.mac(build.mak, iso[:-size]))


def hostile(build: Bank, mti: str, fields: dict, key: str, data: bytes | None = None,
            length: bytes | None = None) -> bytes:
    """The request as ``build`` encodes it, with field ``key``'s bytes on the wire (and/or its
    length prefix) replaced and the MAC made again: the gateway's checks must refuse it, the MAC
    will not. Without ``length`` a variable field's prefix counts the new data truthfully."""
    spec = build.dialect.fields.spec
    _, wire = iso8583.decode(build.encode(mti, fields), spec)
    old = wire[key]
    if data is not None:
        old = {"len": prefix(spec[key], old["len"], data), "data": data}
    if length is not None:
        old = {**old, "len": length}
    wire[key] = old
    iso = b"".join(part["len"] + part["data"] for part in wire.values())
    return iso if key in MAC_FIELDS else remac(build, iso)


def prefix(spec: dict, old: bytes, data: bytes) -> bytes:
    """A variable field's length prefix for ``data``, in the prefix's own width and encoding."""
    if not old:
        return b""
    count = len(data) * 2 if spec.get("len_count") == "nibbles" else len(data)
    if spec["len_enc"] == "bcd":
        return bytes.fromhex(f"{count:0{2 * len(old)}d}")
    return f"{count:0{len(old)}d}".encode()
