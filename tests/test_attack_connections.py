"""Attack: connections against a real ``gridpay serve`` while honest banks pay (docs/spec/INTERFACE.md §1).

Floods of connections per bank (beyond its ``max_connections``) and per listener (connections
that never say whose they are, or name a bank of another listener), slow-loris connections
that trickle a frame a byte at a time, and a TLS listener met with plain TCP, no client
certificate, a stranger's certificate, or a handshake never begun. Other banks, and the flooded
bank's own open connection, must keep getting every answer right and in time.
"""
from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import time

from attack_banks import (HonestBank, HonestLoad, answers_to_raw, assert_honest_served, closed_by_peer,
                          closed_of, raw_socket, told_of)
from attack_harness import SCALE, RssWatch, assert_ledger_is_what_banks_were_told, seed, serving
from gateway_harness import Bank, settings_tree
from iso8583_specs.framing import encode_frame
from ledger_helpers import assert_ledger_verifies
from test_gateway_tls import pki  # noqa: F401 - the CA, the server's, the bank's and an intruder's certificates

A, B, C = "01020000", "01030000", "01050000"   # A and B share the ascii listener; C is bcd
HOLD_S = 0.5   # how long a flooding connection waits to see whether the gateway closes it


def refused(sock: socket.socket) -> bool:
    """The gateway closed a connection it would not serve (at once: nothing was sent on it)."""
    return closed_by_peer(sock, HOLD_S)


def metric(gw, name: str, **labels) -> float:
    _, body = gw.http("/metrics")
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$", body, re.M)
    return float(match.group(1)) if match else 0.0


def signed_on(gw, code: str, **where) -> HonestBank:
    bank = HonestBank(gw, code, **where)
    bank.sign_on()
    return bank


def test_a_connection_flood_for_one_bank_leaves_its_open_link_and_other_banks_served(tmp_path, sqlite_url):
    """Bank A is known by its address (allowed_networks) and may hold 4 connections: a flood of
    its own connections is refused beyond that, its open link and banks B and C keep paying, and
    the slots come back when the flood goes."""
    customers = seed(sqlite_url, A=30, B=30, C=30, D=2)
    tree = settings_tree(sqlite_url, **{A: {"allowed_networks": ["127.0.0.2/32"], "max_connections": 4},
                                        B: {"allowed_networks": ["127.0.0.3/32"]}})
    flood_size = 40 * SCALE
    with serving(tmp_path, sqlite_url, tree) as gw, RssWatch(gw.proc.pid) as rss:
        a = signed_on(gw, A, source="127.0.0.2")
        with HonestLoad((a, customers["A"])) as load:
            flood = [raw_socket(gw.ports["ascii"], source="127.0.0.2") for _ in range(flood_size)]
            closed = closed_of(flood, within=2.0)
            b, c = signed_on(gw, B, source="127.0.0.3"), signed_on(gw, C)
            for bank, numbers in ((b, customers["B"]), (c, customers["C"])):
                for customer in numbers:
                    bank.pay(customer)
            load.finish()
        refusals = metric(gw, "gridpay_connections_refused_total", bank=A, reason="limit")
        for sock in flood:
            sock.close()
        again = admitted(gw, A, source="127.0.0.2")
        again.pay(customers["D"][0])
        honest = (a, b, c, again)
    rss.assert_bounded("connection flood for one bank")
    assert closed == flood_size - 3 and refusals >= closed   # A's own link holds the 4th slot
    assert_honest_served(*honest)
    assert_ledger_is_what_banks_were_told(sqlite_url, told_of(*honest))
    assert_ledger_verifies(sqlite_url)


def admitted(gw, code: str, source: str, tries: int = 20) -> HonestBank:
    """A new connection of the bank, once the gateway has noticed its flood's connections close."""
    for _ in range(tries):
        bank = HonestBank(gw, code, source=source)
        if not refused(bank.wire.sock):
            bank.sign_on()
            return bank
        bank.close()
    raise AssertionError(f"bank {code} cannot connect again after its flood closed")


class ListenerFlood:
    """Connections to the shared ascii listener that never pay: silent ones; ones naming bank A in
    an echo (which makes them A's); ones naming a bank that does not exist; ones whose field 32
    names bank C of the bcd listener in a malformed payment (answered 30)."""

    def __init__(self, gw, size: int):
        self.port = gw.ports["ascii"]
        self.size = size
        self.build = Bank(None, None, A)   # ascii requests, whatever bank their field 32 names
        self.socks: list[socket.socket] = []
        self.answered = 0

    def request(self, n: int) -> bytes | None:
        build, kind = self.build, n % 4
        if kind == 0:
            return None
        if kind in (1, 2):
            return build.encode("0800", {**build.head(), "32": A if kind == 1 else "09990000", "70": "301"}, False)
        payment = build.encode("0200", {**build.payment_fields("C00000001", 100), "32": C}, key=False)
        return payment.replace(b"000000000100", b"00000000010X", 1)   # field 4 not numeric

    def open(self) -> None:
        for n in range(self.size):
            sock = raw_socket(self.port)
            request = self.request(n)
            if request is not None:
                answers, _ = answers_to_raw(sock, self.build.dialect, encode_frame(self.build.dialect.framing, request),
                                            2.0, enough=1)
                self.answered += len(answers)
            self.socks.append(sock)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def test_a_connection_flood_on_one_listener_leaves_other_banks_served(tmp_path, sqlite_url):
    """Hundreds of connections to the ascii listener: bank B connects on it and pays, bank C on
    the bcd listener connects and pays (whatever the flood's requests named), and bank A's open
    link pays throughout."""
    customers = seed(sqlite_url, A=30, B=20, C=20)
    tree = settings_tree(sqlite_url, **{C: {"max_connections": 4}})
    with serving(tmp_path, sqlite_url, tree) as gw, RssWatch(gw.proc.pid) as rss:
        a = signed_on(gw, A)
        flood = ListenerFlood(gw, 200 * SCALE)
        with HonestLoad((a, customers["A"])) as load:
            flood.open()
            b, c = signed_on(gw, B), signed_on(gw, C)
            for bank, numbers in ((b, customers["B"]), (c, customers["C"])):
                for customer in numbers:
                    bank.pay(customer)
            load.finish()
        tracebacks = gw.tracebacks()
        flood.close()
    rss.assert_bounded("connection flood on one listener")
    assert flood.answered > 0
    assert_honest_served(a, b, c)
    assert_ledger_is_what_banks_were_told(sqlite_url, told_of(a, b, c))
    assert not tracebacks, tracebacks[:3]


class SlowLoris(threading.Thread):
    """Connections that each trickle a whole, valid request one byte a second: only the frame
    timeout can end them (the idle timeout never comes, bytes keep arriving)."""

    def __init__(self, gw, per_listener: int, interval_s: float = 1.0):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.links: list[tuple[socket.socket, bytes]] = []
        for listener, code in (("ascii", A), ("bcd", C)):
            build = Bank(None, None, code)
            frame = encode_frame(build.dialect.framing, build.encode("0800", {**build.head(), "70": "301"}, False),
                                 bytes.fromhex("6000000001") if build.dialect.framing.tpdu else None)
            self.links += [(raw_socket(gw.ports[listener]), frame) for _ in range(per_listener)]
        self.completed: list[int] = []   # links whose whole frame went out: never, if the gateway cuts them
        self.answered: list[int] = []
        self.open = len(self.links)

    def run(self) -> None:
        sent = [0] * len(self.links)
        live = set(range(len(self.links)))
        while live:
            for i in list(live):
                sock, frame = self.links[i]
                if self._gone(sock, i):
                    live.discard(i)
                    continue
                try:
                    sock.send(frame[sent[i]:sent[i] + 1])
                except OSError:
                    live.discard(i)
                    continue
                sent[i] += 1
                if sent[i] == len(frame):
                    self.completed.append(i)
                    live.discard(i)
            self.open = len(live)
            time.sleep(self.interval_s)

    def _gone(self, sock: socket.socket, i: int) -> bool:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            data = sock.recv(65536)
        except OSError:
            return True
        if data:
            self.answered.append(i)
        return not data


def test_slow_loris_connections_are_cut_by_the_frame_timeout_and_others_served(tmp_path, sqlite_url):
    customers = seed(sqlite_url, A=40, B=40, C=40)
    frame_timeout = 3
    tree = settings_tree(sqlite_url, **{code: {"frame_timeout_s": frame_timeout} for code in (A, B, C)})
    with serving(tmp_path, sqlite_url, tree) as gw, RssWatch(gw.proc.pid) as rss:
        honest = [signed_on(gw, code) for code in (A, B, C)]
        loris = SlowLoris(gw, per_listener=10 * SCALE)
        with HonestLoad(*zip(honest, (customers["A"], customers["B"], customers["C"]))) as load:
            loris.start()
            load.finish()
            loris.join(timeout=frame_timeout * 10)
    rss.assert_bounded("slow loris")
    assert not loris.is_alive() and loris.open == 0, "slow connections outlived the frame timeout"
    assert loris.completed == [] and loris.answered == []
    assert_honest_served(*honest)
    assert_ledger_is_what_banks_were_told(sqlite_url, told_of(*honest))


def tls_tree(url: str, pki) -> dict:
    """Bank A alone on a TLS listener with client certificates, at most 4 connections; B and C plain."""
    tree = settings_tree(url, **{A: {"client_cert_subject": "bank-01020000", "max_connections": 4}})
    d = pki["dir"]
    tree["gateway"]["listeners"] = [
        {"name": "tls", "port": 0, "dialect": "ascii", "banks": [A], "tls_cert_file": str(d / "server.crt"),
         "tls_key_file": str(d / "server.key"), "tls_client_ca_file": str(d / "ca.crt")},
        {"name": "ascii", "port": 0, "dialect": "ascii", "banks": [B]},
        {"name": "bcd", "port": 0, "dialect": "bcd", "banks": [C]}]
    return tree


def client_tls(pki, who: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki["dir"] / "ca.crt")
    if who:
        context.load_cert_chain(pki["dir"] / f"{who}.crt", pki["dir"] / f"{who}.key")
    return context


def tls_refused(port: int, context: ssl.SSLContext, request: bytes, dialect) -> bool:
    """The TLS listener will not serve this client: the handshake fails, or the connection is
    closed with the request unanswered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                answers, closed = answers_to_raw(tls, dialect, request, 5.0)
                return closed and not answers
    except OSError:   # ssl.SSLError included: the handshake failed
        return True


def test_a_tls_listener_refuses_plain_tcp_and_strangers_and_its_bank_still_connects(tmp_path, sqlite_url, pki):
    customers = seed(sqlite_url, A=20, B=20, C=20, P=1)
    with serving(tmp_path, sqlite_url, tls_tree(sqlite_url, pki)) as gw, RssWatch(gw.proc.pid) as rss:
        port = gw.ports["tls"]
        a = signed_on(gw, A, listener="tls", tls=client_tls(pki, "bank"))
        b, c = signed_on(gw, B), signed_on(gw, C)
        with HonestLoad((a, customers["A"][:10]), (b, customers["B"]), (c, customers["C"])) as load:
            payment = encode_frame(a.build.dialect.framing, a.build.encode(
                "0200", a.build.payment_fields(customers["P"][0], 10050)))
            plain = raw_socket(port)
            plain_refused = answers_to_raw(plain, a.build.dialect, payment, 5.0) == ([], True)
            no_certificate = tls_refused(port, client_tls(pki, None), payment, a.build.dialect)
            stranger = tls_refused(port, client_tls(pki, "intruder"), payment, a.build.dialect)
            held = [raw_socket(port) for _ in range(10 * SCALE)]   # TCP accepted, no handshake ever begun
            time.sleep(HOLD_S)
            second = HonestBank(gw, A, listener="tls", tls=client_tls(pki, "bank"))
            second.build.mak = a.build.mak   # the bank's key on all its connections (§4.1)
            for customer in customers["A"][10:]:
                second.pay(customer)
            load.finish()
            for sock in [plain, *held]:
                sock.close()
        tracebacks = gw.tracebacks()
    rss.assert_bounded("TLS refusals")
    assert plain_refused and no_certificate and stranger
    assert_honest_served(a, b, c, second)
    assert_ledger_is_what_banks_were_told(sqlite_url, told_of(a, b, c, second))
    assert not tracebacks, tracebacks[:3]


def test_a_connection_pipelining_thousands_of_requests_it_never_reads_leaves_others_served(tmp_path, sqlite_url):
    """Bank B writes thousands of inquiries on one connection, half with a MAC under a key it was
    never given (each costs the gateway a key reload before its A0), and never reads an answer;
    banks A and C sign on and pay meanwhile."""
    customers = seed(sqlite_url, A=20, B=5, C=20)
    with serving(tmp_path, sqlite_url) as gw, RssWatch(gw.proc.pid) as rss:
        b = signed_on(gw, B)
        build, frames = b.build, []
        for n in range(2500 * SCALE):
            for key in (True, bytes(16)):
                fields = build.inquiry_fields(customers["B"][n % 5])
                frames.append(encode_frame(build.dialect.framing, build.encode("0100", fields, key)))
        flood = raw_socket(gw.ports["ascii"], timeout=None)
        writer = threading.Thread(target=lambda: flood_write(flood, b"".join(frames)), daemon=True)
        writer.start()
        a, c = signed_on(gw, A), signed_on(gw, C)
        with HonestLoad((a, customers["A"]), (c, customers["C"])) as load:
            load.finish()
        flood.shutdown(socket.SHUT_RDWR)   # a gateway that stopped reading it holds the writer: let go
        writer.join(30)
        flood.close()
        tracebacks = gw.tracebacks()
    rss.assert_bounded("pipelined requests never read")
    assert_honest_served(a, c)
    assert_ledger_is_what_banks_were_told(sqlite_url, told_of(a, c))
    assert not tracebacks, tracebacks[:3]


def flood_write(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:   # the gateway may stop the flood by closing the connection
        pass
