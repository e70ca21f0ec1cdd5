"""The counter channel (docs/spec/INTERFACE.md §4.1-§4.7): banks' counters ask, the gateway answers.

A request runs through small participants, top to bottom, until one decides the answer
(jPOS TransactionManager style). Each participant has one job:

    decode → identify_bank → validate → bind_link → network_management → require_key
           → verify_mac → transact (inquiry | payment | reversal) → respond

Database work never runs on the reactor: inquiries go to a thread pool, postings to the
ledger's group committer, and a ``00`` leaves only after its posting is committed. A posting
whose outcome the ledger cannot tell within the bank's timeout gets no answer at all (§6).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import defer

from gateway import responses
from gateway.exchange import Exchange, content_digest
from gateway.txlog import Allowance, log_exchange
from iso8583_specs import codec, shapes
from iso8583_specs import keys as wire_keys
from iso8583_specs.errors import MessageError
from iso8583_specs.framing import response_tpdu
from iso8583_specs.shapes import response_mti
from iso8583_specs.tlv import Tlv
from ledger.answers import UnknownOutcome

log = logging.getLogger("gridpay.counter")

CHANNEL = "counter"
TRANSACTIONS = shapes.transactions(CHANNEL)            # (MTI, processing code) -> kind
REQUEST_MTIS = {mti for mti, _ in TRANSACTIONS} | {"0800"}
PROCESSING_CODES = {pc for _, pc in TRANSACTIONS}
ANSWERED_CLASSES = "02"  # ISO 8583:1987 message class (third MTI digit): requests and advices get answers


def _claim_nothing(bank: str) -> bool:
    return True


@dataclass
class Link:
    """What a connection knows of itself: the banks it may speak for (its listener's, narrowed by
    address and certificate), the bank it belongs to once known, and how to claim it for one."""
    allowed_banks: frozenset[str]
    dialect: object
    bank: str | None = None
    claim: Callable[[str], bool] = _claim_nothing   # the link becomes the bank's, counted; False: refused
    log_allowance: Allowance = field(default_factory=Allowance)

    def may_speak_for(self, bank: str) -> bool:
        return bank == self.bank if self.bank is not None else bank in self.allowed_banks

    def metric_bank(self, bank: str) -> str:
        """The bank a metric counts a request against: its own when it may use this link, else the
        link's (bounded: field 32 is the sender's to choose)."""
        return bank if bank and self.may_speak_for(bank) else (self.bank or "unknown")


class CounterService:
    def __init__(self, banks, keys, ledger, metrics, clock, zmk_for):
        self.banks = banks              # gateway.bank_directory.BankDirectory
        self.keys = keys                # ledger.key_store.KeyStore
        self.ledger = ledger            # gateway.ledger_port.LedgerPort
        self.metrics = metrics
        self.clock = clock              # config.clock.Clock on the reactor
        self.zmk_for = zmk_for          # bank code -> ZMK bytes
        self.in_flight = 0
        metrics.in_flight.set_function(lambda: self.in_flight)

    async def handle(self, ex: Exchange, link: Link) -> bytes | None:
        """Run one request through the participants; returns the response message, or None."""
        self.in_flight += 1
        try:
            for participant in (self.decode, self.identify_bank, self.validate, self.bind_link,
                                self.network_management, self.require_key, self.verify_mac, self.transact):
                await participant(ex, link)
                if ex.decided:
                    break
            return None if ex.silent else self._answer(ex, link)
        finally:
            self.in_flight -= 1
            now = self.clock.seconds()
            # a frame dropped before any transaction began is no one's transaction: within the allowance
            log_exchange(ex, now, link.log_allowance if ex.silent and not ex.kind else None)
            if not ex.silent:
                self.metrics.answered(link.metric_bank(ex.bank), ex.mti if ex.mti in REQUEST_MTIS else "other",
                                      _pc_label(ex.processing_code), ex.code or "--", max(0.0, now - ex.received))

    def _answer(self, ex: Exchange, link: Link) -> bytes | None:
        try:
            return self.respond(ex, link)
        except MessageError as err:
            if ex.kind:  # past the checks, into the keys or the ledger: a fault of ours, not the sender's
                raise
            # a field 7, 11 or 32 read from the frame but not one an answer can carry (§6)
            self._drop(ex, link, "unanswerable", f"no answer can echo this request: {err.er}")
            return None

    def _drop(self, ex: Exchange, link: Link, reason: str, why: str) -> None:
        """No answer: the frame names no request the gateway can answer. Counted by reason; its one
        line is the transaction log's, with rc null and this reason."""
        ex.silent = True
        ex.detail = f"not answered: {why}"
        self.metrics.child(self.metrics.dropped, link.metric_bank(""), reason).inc()

    # --- participants -------------------------------------------------------------------

    async def decode(self, ex: Exchange, link: Link) -> None:
        try:
            message = codec.decode(link.dialect, ex.frame)
        except MessageError as err:
            self._decode_failed(ex, link, err)
        else:
            ex.mti, ex.fields, ex.message = message.mti, message.fields, message
            if ex.mti not in REQUEST_MTIS:
                self._not_a_request_we_know(ex, link)
        if ex.tpdu is not None and not ex.silent:
            try:
                response_tpdu(ex.tpdu)
            except MessageError as err:  # no TPDU to answer with (§2.2): nothing may be done either
                self._drop(ex, link, "unanswerable", err.er)

    def _not_a_request_we_know(self, ex: Exchange, link: Link) -> None:
        if ex.mti == "0810":  # the bank answering our echo: never answered in turn
            ex.silent = True
        elif ex.mti[2] in "13":  # any other response or advice response: not ours to answer
            self._drop(ex, link, "response", f"{ex.mti} is a response")
        elif ex.mti[2] not in ANSWERED_CLASSES:  # a notification, or no class at all: nothing expects an answer
            self._drop(ex, link, "unanswerable", f"MTI {ex.mti} is not a request")
        else:
            ex.decide("40", f"MTI {ex.mti} not supported")

    def _decode_failed(self, ex: Exchange, link: Link, err: MessageError) -> None:
        named = self._bank_named(err.identity.get("32", ""))
        self.metrics.child(self.metrics.format_errors, link.metric_bank(named or "")).inc()
        if not err.answerable:
            self._drop(ex, link, "undecodable", err.er)
            return
        ex.mti, ex.fields = err.mti, dict(err.identity)
        ex.bank = named or ex.fields["32"]
        if ex.mti[2] not in ANSWERED_CLASSES:
            self._drop(ex, link, "response" if ex.mti[2] in "13" else "unanswerable", err.er)
            return
        ex.echo_all = False
        ex.decide(err.response_code, err.er)

    def _bank_named(self, field32: str) -> str | None:
        """The configured bank field 32 names, or None (whatever the sender put there)."""
        return self.banks.resolve(field32) if field32.isascii() else None

    async def identify_bank(self, ex: Exchange, link: Link) -> None:
        bank = self._bank_named(ex.fields.get("32", ""))
        if bank is None or bank not in link.allowed_banks or CHANNEL not in self.banks.channels(bank):
            ex.bank = ex.fields.get("32", "")
            ex.decide("58", "bank code not allowed on this link")
            return
        ex.bank = bank
        if link.bank is not None and link.bank != bank:
            ex.decide("58", "this connection belongs to another bank")

    async def bind_link(self, ex: Exchange, link: Link) -> None:
        """A link several banks may use belongs to the first of them whose request got this far
        (decoded, allowed here, well formed), and counts against that bank's connections only then."""
        if link.bank is None and not link.claim(ex.bank):
            self._drop(ex, link, "limit", f"bank {ex.bank} is at its connection limit; connection closed")

    async def network_management(self, ex: Exchange, link: Link) -> None:
        if ex.mti != "0800":
            return
        ex.kind, ex.mac = "network", False
        action = shapes.NETWORK_CODES.get(ex.fields.get("70", ""))
        if action is None:
            ex.decide("40", f"network management code {ex.fields.get('70')} not supported")
        elif action == "sign-on":
            mak = wire_keys.generate_mak()
            zmk = self.zmk_for(ex.bank)
            await self.ledger.run(self.keys.issue, ex.bank, CHANNEL, mak)  # persisted: off the reactor
            ex.reply_tlv = list(Tlv.parse(wire_keys.sign_on_field48(zmk, mak)))
            self.metrics.signed_on.labels(ex.bank, CHANNEL).set(1)
            ex.decide("00")
        elif action == "sign-off":
            await self.ledger.run(self.keys.drop, ex.bank, CHANNEL)
            self.metrics.signed_on.labels(ex.bank, CHANNEL).set(0)
            ex.decide("00")
        else:
            ex.decide("00")

    async def require_key(self, ex: Exchange, link: Link) -> None:
        if self.keys.accepted(ex.bank, CHANNEL):
            return
        # whether this refresh or the reactor's periodic reload took the stored key, it counts
        await self.ledger.run(self.keys.refresh, ex.bank, CHANNEL)
        if self.keys.accepted(ex.bank, CHANNEL):
            return
        ex.mac = False
        ex.decide("91", "not signed on")

    async def verify_mac(self, ex: Exchange, link: Link) -> None:
        if self._mac_ok(ex, link):
            return
        # another gateway instance may have issued a newer key for this bank
        await self.ledger.run(self.keys.refresh, ex.bank, CHANNEL)
        if self._mac_ok(ex, link):
            return
        self.metrics.mac_failures.labels(ex.bank).inc()
        ex.decide("A0", "MAC verification failed")

    def _mac_ok(self, ex: Exchange, link: Link) -> bool:
        return any(codec.verify_mac(link.dialect, ex.frame, key) for key in self.keys.accepted(ex.bank, CHANNEL))

    async def validate(self, ex: Exchange, link: Link) -> None:
        if ex.mti != "0800" and "3" in ex.fields and (ex.mti, ex.processing_code) not in TRANSACTIONS:
            ex.decide("40", f"processing code {ex.processing_code} not supported for {ex.mti} on the counter channel")
            return
        try:
            shapes.validate_request(ex.message, require_mac=ex.mti != "0800")
        except MessageError as err:
            self.metrics.format_errors.labels(ex.bank).inc()
            ex.echo_all = err.response_code != "30"
            ex.decide(err.response_code, err.er)
            return
        if ex.mti != "0800":
            ex.kind = TRANSACTIONS[(ex.mti, ex.processing_code)]

    async def transact(self, ex: Exchange, link: Link) -> None:
        if ex.kind == "inquiry":
            result = await self.ledger.inquire(ex.first("CN"), self._timeout(ex))
            responses.inquiry(ex, result)
            return
        posting = (responses.payment_posting if ex.kind == "payment" else self._reversal_posting)(
            ex, content_digest(ex.mti, ex.fields))
        outcome = await self.ledger.post(posting, self._timeout(ex))
        if isinstance(outcome, UnknownOutcome):
            self._unanswered(ex, outcome.detail)
            return
        if outcome.replayed:
            self.metrics.duplicates.labels(ex.bank).inc()
        responses.posting(ex, outcome)

    def _timeout(self, ex: Exchange) -> float:
        """The bank's request_timeout_s: past it a request the database has not answered gets 96 when
        nothing can have been applied, and no answer when that is not known."""
        return self.banks.config(ex.bank).request_timeout_s

    def _unanswered(self, ex: Exchange, why: str) -> None:
        """Neither 96 (it may have been applied) nor an approval (it may not): no answer. The bank's
        timeout leads to its reversal (0420) or repeat, which finds the stored answer or nothing."""
        ex.silent = True
        ex.detail = why
        self.metrics.unanswered.labels(ex.bank).inc()
        log.error("%s %s stan %s rrn %s from %s: outcome unknown by the bank's timeout, not answered: %s",
                  ex.kind, ex.mti, ex.fields.get("11"), ex.fields.get("37"), ex.bank, why)

    def _reversal_posting(self, ex: Exchange, digest: str):
        return responses.reversal_posting(ex, digest, self.banks.resolve_number)

    # --- the answer ---------------------------------------------------------------------

    def respond(self, ex: Exchange, link: Link) -> bytes:
        fields = responses.reply_fields(ex, self.clock.business_date(ex.received_at))
        # a bank's key MACs answers only on links that bank may use: a 58 or 30 naming another bank
        # is no occasion to MAC under that bank's key
        mac = ex.mac and ex.mti != "0800" and link.may_speak_for(ex.bank)
        key = self.keys.current(ex.bank, CHANNEL) if mac else None
        return codec.encode(link.dialect, response_mti(ex.mti), fields, mac_key=key)


def _pc_label(processing_code: str) -> str:
    if processing_code in PROCESSING_CODES:
        return processing_code
    return "other" if processing_code else "-"
