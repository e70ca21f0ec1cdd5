"""A bank's host on the debit channel (``gridpay sim bank``): a TCP server the gateway connects to.

It answers sign-on with a fresh MAK under the ZMK (docs/spec/INTERFACE.md §4.1), verifies MACs (A0; 91 before sign-on),
applies direct debits to its accounts (14, 57, 61, 51 are real: ``bank_state.BankBooks``) and
debit reversals, and follows §4.7 to the letter: every answer it gives an identity (32, 7, 11),
refusals such as A0 included, is answered again to a repeat with the same content, a different
request under that identity gets 94, and so does a request reusing another debit's RRN on the
business date (a reversal carries its original's). It misbehaves on purpose, seeded:

- latency: fixed, uniform (0..2×mean) or exponential, in ms, via ``callLater`` (never sleeps);
- declines by code at given rates (drawn after the account checks 14/57, before 61/51);
- ``drop_before_apply``: no answer, nothing applied; ``drop_after_apply``: applied, no answer
  (the unknown-outcome case);
- ``disconnect``: the message is applied, then the connection closes instead of answering
  (other answers still pending on that connection are lost too);
- ``slow_rate``/``slow_ms``: extra delay; ``duplicate_rate``: the answer is sent twice;
  ``bad_mac_rate``: the answer's MAC is corrupted; ``refuse_mac_rate``: a new 0200 is answered
  A0 as if its MAC had not verified (a key race between engines), nothing applied;
- ``echo_interval_s``: the host echoes an idle connection; ``answer_echo=False`` ignores the
  gateway's echoes.

Everything it applied is in ``books`` (``applied``, ``reversals``, ``preempted``) and
``write_day_file`` writes the bank transaction file of §7.1 for the debit channel.
"""
from __future__ import annotations

import logging
import random
from collections import Counter, deque
from datetime import date, datetime
from pathlib import Path

from twisted.internet import defer
from twisted.internet.protocol import Factory

from ledger.key_store import KeyStore
from gateway.sim.bank_behaviour import Behaviour, parse_rates  # noqa: F401 - re-exported
from gateway.sim.bank_connection import BankConnection
from gateway.sim.bank_state import Account, BankBooks, load_accounts  # noqa: F401 - re-exported
from iso8583_specs import codec, shapes
from iso8583_specs.errors import MessageError
from iso8583_specs.framing import response_tpdu
from iso8583_specs.keys import generate_mak, sign_on_field48
from iso8583_specs.links import network_answer
from config.clock import as_clock
from iso8583_specs.shapes import IDENTITY as ALWAYS, REPEAT_OF, RESPONSE_TO, OriginalData, echoed
from iso8583_specs.tlv import Tlv

log = logging.getLogger("gridpay.sim.bank")

CHANNEL = "debit"
TRANSACTIONS = shapes.transactions(CHANNEL)   # (MTI, processing code) -> kind, on this channel
DEBIT_ECHO = echoed("0210", "510000")
REVERSAL_ECHO = echoed("0430", "510000")


class BankHost:
    """The bank's host for one bank code. ``start()`` listens (port 0: ephemeral) and returns
    the port; ``stop()`` closes the port and every connection."""

    def __init__(self, reactor, bank_code: str, dialect, zmk: bytes, accounts: dict[str, Account],
                 behaviour: Behaviour | None = None, clock=None, seed: int = 1, business_date: date | None = None,
                 interface: str = "127.0.0.1", port: int = 0, nii_gateway: str = "0000", nii_bank: str = "0001",
                 key_grace_s: float = 60.0, max_frame: int = 8192):
        self.reactor = reactor
        self.clock = as_clock(clock, reactor)    # timers, and the bank's local time (its fields 7, 12, 13)
        self.bank_code = bank_code
        self.dialect = dialect
        self.zmk = zmk
        self.behaviour = behaviour or Behaviour()
        self.rng = random.Random(seed)
        self.books = BankBooks(bank_code, accounts, business_date or self.clock.local().date())
        self.keys = KeyStore(self.clock, grace_s=key_grace_s)
        self.interface, self.requested_port = interface, port
        self.nii_gateway, self.nii_bank = nii_gateway, nii_bank
        self.max_frame = max_frame
        self.counters: Counter = Counter()
        self.connections: set[BankConnection] = set()
        self.responses: dict[tuple, tuple[tuple, str, dict, bool]] = {}  # identity -> (content, MTI, fields, MACed)
        self.rrns: dict[tuple, tuple] = {}    # (business date, RRN) -> the debit identity it belongs to
        self.network_answers: deque = deque(maxlen=100)   # the gateway's 0810s to the host's 0800s
        self.in_flight = 0           # requests received and not yet answered (or given up)
        self.max_in_flight_seen = 0
        self._answers: set = set()
        self._listening = None
        self.port: int | None = None
        self._f15 = (None, "")

    # --- records (for tests) -------------------------------------------------------------------

    @property
    def accounts(self) -> dict[str, Account]:
        return self.books.accounts

    @property
    def applied(self):
        return self.books.applied

    @property
    def reversals(self):
        return self.books.reversals

    @property
    def business_date(self) -> date:
        return self.books.business_date

    @business_date.setter
    def business_date(self, value: date) -> None:
        self.books.business_date = value

    def write_day_file(self, path: str | Path, business_date: date | None = None) -> Path:
        return self.books.write_day_file(path, business_date)

    @property
    def mak(self) -> bytes | None:
        return self.keys.current(self.bank_code, CHANNEL)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> int:
        factory = Factory.forProtocol(lambda: BankConnection(self))
        factory.noisy = False
        self._listening = self.reactor.listenTCP(self.requested_port, factory, interface=self.interface)
        self.port = self._listening.getHost().port
        return self.port

    def drop_connections(self) -> None:
        for conn in list(self.connections):
            conn.transport.abortConnection()

    def stop(self) -> defer.Deferred:
        for call in list(self._answers):
            if call.active():
                call.cancel()
        self._answers.clear()
        waits = []
        for conn in list(self.connections):
            waits.append(conn.closed)
            conn.transport.abortConnection()
        if self._listening is not None:
            waits.append(defer.maybeDeferred(self._listening.stopListening))
            self._listening = None
        return defer.gatherResults(waits)

    # --- messages ------------------------------------------------------------------------------

    def handle(self, conn: BankConnection, frame) -> None:
        counters = self.counters
        try:
            message = codec.decode(self.dialect, frame.message)
        except MessageError as err:
            counters["format_errors"] += 1
            if err.answerable and err.mti in RESPONSE_TO:
                fields = {k: err.identity[k] for k in ALWAYS}
                fields.update({"39": err.response_code, "48": Tlv([("ER", err.er)]).encode()})
                self._reply(conn, frame, RESPONSE_TO[err.mti], fields, mac=err.mti != "0800", delay=False)
            return
        mti = message.mti
        if mti == "0810":
            counters["echo_answers"] += 1
            self.network_answers.append(message)
            return
        if mti == "0800":
            self._network(conn, frame, message)
            return
        if mti not in RESPONSE_TO:
            counters["unexpected_mti"] += 1
            return
        self._financial(conn, frame, message)

    def _network(self, conn, frame, message) -> None:
        code = message.fields.get("70")
        fields = network_answer(message.fields, self._settlement(), "00")
        if code == shapes.SIGN_ON:
            mak = generate_mak()
            self.keys.install(self.bank_code, CHANNEL, mak)
            fields["48"] = sign_on_field48(self.zmk, mak)
            self.counters["sign_ons"] += 1
        elif code == shapes.SIGN_OFF:
            self.keys.drop(self.bank_code, CHANNEL)
            self.counters["sign_offs"] += 1
        elif code == shapes.ECHO:
            self.counters["echoes_received"] += 1
            if not self.behaviour.answer_echo:
                return
        else:
            fields["39"] = "40"
        self._reply(conn, frame, "0810", fields, mac=False, delay=False)

    def _financial(self, conn, frame, message) -> None:
        """§4.7 taken literally: every answer given to an identity (32, 7, 11) is remembered -
        refusals (30, 40, 91, A0, 58) included - and a repeat with that identity and the same
        content gets it again, while a different request under it gets 94; an RRN (37) is owned
        by the debit it first came with on the business date (a reversal names its original's
        RRN and field 90 points at that original), and any other request with it gets 94."""
        counters, b, rng = self.counters, self.behaviour, self.rng
        f = message.fields
        mti = message.mti
        counters[f"received_{mti}"] += 1
        resp_mti = RESPONSE_TO[mti]
        identity = {k: f[k] for k in ALWAYS if k in f}
        key = self.books.identity(f["32"], f["7"], f["11"]) if len(identity) == 3 else None
        # same content = the same bytes after the MTI and before the MAC (0421 repeats 0420, and
        # a request MACed again under a newer key is still the same request)
        fs = self.dialect.fields
        content = (REPEAT_OF.get(mti, mti), message.raw[fs.mti_len:-fs.mac_len])
        try:
            shapes.validate_request(message)
        except MessageError as err:
            counters["format_errors"] += 1
            if key is not None:
                self._refuse(conn, frame, key, content, resp_mti, {**identity, "39": err.response_code,
                                                                   "48": Tlv([("ER", err.er)]).encode()}, f, mti)
            return
        if (mti, f["3"]) not in TRANSACTIONS:
            counters["unsupported"] += 1
            self._refuse(conn, frame, key, content, resp_mti, {
                **identity, "39": "40", "48": Tlv([("ER", f"field 3: {f['3']} not on this channel")]).encode()}, f, mti)
            return
        keys = self.keys.accepted(self.bank_code, CHANNEL)
        if not keys:
            counters["not_signed_on"] += 1
            self._refuse(conn, frame, key, content, resp_mti, {**identity, "39": "91"}, f, mti, mac=False)
            return
        if not any(codec.verify_mac(self.dialect, message.raw, k) for k in keys):
            counters["mac_failures"] += 1
            self._refuse(conn, frame, key, content, resp_mti, {**identity, "39": "A0"}, f, mti)
            return
        if b.drop_before_apply and rng.random() < b.drop_before_apply:
            counters["dropped_before_apply"] += 1
            return
        seen = self.responses.get(key)
        mac = True
        if seen is not None:
            if seen[0] == content:
                counters["duplicates"] += 1
                fields, mac = seen[2], seen[3]
            else:
                counters["duplicate_identity_94"] += 1
                fields = {**identity, "39": "94"}
        elif f["32"] != self.bank_code and not (f["32"].isdigit() and int(f["32"]) == int(self.bank_code)):
            fields = self._remember(key, content, resp_mti, {**identity, "39": "58"}, f, mti)
        elif mti == "0200" and b.refuse_mac_rate and rng.random() < b.refuse_mac_rate:
            counters["mac_refused"] += 1     # as if the request were MACed under a key replaced twice since
            fields = self._remember(key, content, resp_mti, {**identity, "39": "A0"}, f, mti)
        elif not self._rrn_free(f, key, mti):
            counters["duplicate_rrn_94"] += 1
            fields = {**identity, "39": "94"}
            self.responses[key] = (content, resp_mti, fields, True)
        elif mti == "0200":
            fields = self._remember(key, content, resp_mti, self._debit(key, message), f, mti)
        else:
            fields = self._remember(key, content, resp_mti, self._reverse(key, message), f, mti)
        if b.drop_after_apply and rng.random() < b.drop_after_apply:
            counters["dropped_after_apply"] += 1
            return
        if b.disconnect and rng.random() < b.disconnect:
            counters["disconnects"] += 1
            conn.transport.loseConnection()
            return
        self._reply(conn, frame, resp_mti, fields, mac=mac)

    def _rrn_owner(self, f: dict, key: tuple, mti: str) -> tuple:
        """The debit an RRN belongs to: a 0200's own identity, a reversal's original (field 90)."""
        if mti == "0200":
            return key
        orig = f.get("90", "")
        return self._original(orig) if len(orig) == 42 else key

    def _original(self, field90: str) -> tuple:
        orig = OriginalData.parse(field90)
        return self.books.identity(orig.bank, orig.transmitted, orig.stan)

    def _rrn_free(self, f: dict, key: tuple, mti: str) -> bool:
        rrn = (f.get("37") or "").strip()
        if not rrn:
            return True
        owner = self.rrns.get((self.books.business_date, rrn))
        return owner is None or owner == self._rrn_owner(f, key, mti)

    def _remember(self, key, content, resp_mti: str, fields: dict, f: dict, mti: str, mac: bool = True) -> dict:
        """The answer to a new identity: given again to its repeats; its RRN is taken."""
        if key not in self.responses:
            self.responses[key] = (content, resp_mti, fields, mac)
            rrn = (f.get("37") or "").strip()
            if rrn:
                self.rrns.setdefault((self.books.business_date, rrn), self._rrn_owner(f, key, mti))
        return fields

    def _refuse(self, conn, frame, key, content, resp_mti: str, fields: dict, f: dict, mti: str,
                mac: bool = True) -> None:
        """30, 40, 91 or A0: nothing applied, but the identity has its answer (§4.7 does not
        exempt refusals), so a repeat - even one MACed under a newer key - gets it again."""
        self._remember(key, content, resp_mti, fields, f, mti, mac)
        self._reply(conn, frame, resp_mti, fields, mac=mac)

    def _debit(self, key, message) -> dict:
        f = message.fields
        forced = None
        table = self.behaviour._decline_table
        if table:
            draw = self.rng.random()
            for threshold, code in table:
                if draw < threshold:
                    forced = code
                    break
        try:
            customer = message.tlv.get("CN", "")
        except MessageError:
            customer = ""
        code, approval = self.books.debit(key, f["102"], int(f["4"]), f["37"], customer, forced)
        self.counters[f"debit_{code}"] += 1
        fields = {k: f[k] for k in DEBIT_ECHO if k in f}
        fields["15"] = self._settlement()
        fields["39"] = code
        if approval is not None:
            fields["38"] = approval
        return fields

    def _reverse(self, key, message) -> dict:
        f = message.fields
        original = self._original(f["90"])
        code = self.books.reverse(original, key, int(f["4"])) if OriginalData.parse(f["90"]).mti == "0200" else "25"
        self.counters[f"reversal_{code}"] += 1
        fields = {k: f[k] for k in REVERSAL_ECHO if k in f}
        fields["15"] = self._settlement()
        fields["39"] = code
        return fields

    def _settlement(self) -> str:
        bd = self.books.business_date
        if self._f15[0] != bd:
            self._f15 = (bd, bd.strftime("%m%d"))
        return self._f15[1]

    # --- answers -------------------------------------------------------------------------------

    def _latency(self) -> float:
        b = self.behaviour
        mean = b.latency_ms
        if mean <= 0:
            ms = 0.0
        elif b.latency_dist == "fixed":
            ms = mean
        elif b.latency_dist == "uniform":
            ms = self.rng.uniform(0, 2 * mean)
        else:
            ms = self.rng.expovariate(1.0 / mean)
        if b.slow_rate and self.rng.random() < b.slow_rate:
            self.counters["slow"] += 1
            ms += b.slow_ms
        return ms / 1000.0

    def _reply(self, conn, frame, mti: str, fields: dict, mac: bool, delay: bool = True) -> None:
        key = self.mak if mac else None
        iso = codec.encode(self.dialect, mti, fields, mac_key=key)
        b = self.behaviour
        if key is not None and b.bad_mac_rate and self.rng.random() < b.bad_mac_rate:
            self.counters["bad_macs_sent"] += 1
            iso = iso[:-1] + bytes([iso[-1] ^ 0x01]) if self.dialect.fields.mac_len == 8 else \
                iso[:-1] + (b"0" if iso[-1:] != b"0" else b"1")
        tpdu = response_tpdu(frame.tpdu) if frame.tpdu else None
        copies = 2 if b.duplicate_rate and self.rng.random() < b.duplicate_rate else 1
        if copies == 2:
            self.counters["duplicates_sent"] += 1
        seconds = self._latency() if delay else 0.0
        if seconds <= 0:
            for _ in range(copies):
                conn.write(iso, tpdu)
            self.counters[f"sent_{mti}"] += 1
            return
        self.in_flight += 1
        if self.in_flight > self.max_in_flight_seen:
            self.max_in_flight_seen = self.in_flight
        call = None

        def send():
            self._answers.discard(call)
            self.in_flight -= 1
            for _ in range(copies):
                conn.write(iso, tpdu)
            self.counters[f"sent_{mti}"] += 1
        call = self.clock.callLater(seconds, send)
        self._answers.add(call)
