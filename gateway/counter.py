"""The counter channel (docs/spec/INTERFACE.md §4.1-§4.7): banks' counters ask, the gateway answers.

A request runs through small participants, top to bottom, until one decides the answer
(jPOS TransactionManager style). Each participant has one job:

    decode → identify_bank → validate → network_management → require_key → verify_mac
           → transact (inquiry | payment | reversal) → respond

Database work never runs on the reactor: inquiries go to a thread pool, postings to the
ledger's group committer, and a ``00`` leaves only after its posting is committed. A posting
whose outcome the ledger cannot tell within the bank's timeout gets no answer at all (§6).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from twisted.internet import defer

from gateway import responses
from gateway.exchange import Exchange, content_digest, response_mti
from gateway.txlog import log_exchange
from iso8583_specs import codec, shapes
from iso8583_specs import keys as wire_keys
from iso8583_specs.errors import MessageError
from iso8583_specs.tlv import Tlv
from ledger.answers import UnknownOutcome

log = logging.getLogger("gridpay.counter")

CHANNEL = "counter"
REQUEST_MTIS = {"0100", "0200", "0400", "0401", "0420", "0421", "0800"}
TRANSACTIONS = {("0100", "310000"): "inquiry", ("0200", "500000"): "payment",
                ("0400", "500000"): "reversal", ("0401", "500000"): "reversal",
                ("0420", "500000"): "reversal", ("0421", "500000"): "reversal"}
NETWORK_CODES = {"001": "sign-on", "002": "sign-off", "301": "echo"}


@dataclass
class Link:
    """What a connection knows of itself: its listener's banks and the bank it was identified as."""
    allowed_banks: frozenset[str]
    dialect: object
    bank: str | None = None


class CounterService:
    def __init__(self, banks, keys, ledger, calendar, metrics, clock, zmk_for):
        self.banks = banks              # gateway.banks.BankDirectory
        self.keys = keys                # gateway.keys.KeyStore
        self.ledger = ledger            # gateway.ledger_port.LedgerPort
        self.calendar = calendar        # ledger.business_date.BusinessCalendar
        self.metrics = metrics
        self.clock = clock
        self.zmk_for = zmk_for          # bank code -> ZMK bytes
        self.in_flight = 0
        metrics.in_flight.set_function(lambda: self.in_flight)

    async def handle(self, ex: Exchange, link: Link) -> bytes | None:
        """Run one request through the participants; returns the response message, or None."""
        self.in_flight += 1
        try:
            for participant in (self.decode, self.identify_bank, self.validate, self.network_management,
                                self.require_key, self.verify_mac, self.transact):
                await participant(ex, link)
                if ex.decided:
                    break
            return None if ex.silent else self.respond(ex, link)
        finally:
            self.in_flight -= 1
            now = self.clock.seconds()
            log_exchange(ex, now)
            if not ex.silent:
                self.metrics.answered(ex.bank or "unknown", ex.mti or "????", ex.processing_code or "-",
                                      ex.code or "--", max(0.0, now - ex.received))

    # --- participants -------------------------------------------------------------------

    async def decode(self, ex: Exchange, link: Link) -> None:
        try:
            message = codec.decode(link.dialect, ex.frame)
        except MessageError as err:
            self._decode_failed(ex, link, err)
            return
        ex.mti, ex.fields, ex.message = message.mti, message.fields, message
        if ex.mti not in REQUEST_MTIS:
            if ex.mti == "0810":  # the bank answering our echo: never answered in turn
                ex.silent = True
            elif ex.mti[2] in "13":  # any other response or advice response: not ours to answer
                log.warning("unexpected %s from %s ignored", ex.mti, ex.fields.get("32", "?"))
                ex.silent = True
            else:
                ex.decide("40", f"MTI {ex.mti} not supported")

    def _decode_failed(self, ex: Exchange, link: Link, err: MessageError) -> None:
        self.metrics.format_errors.labels(err.identity.get("32", "unknown")).inc()
        if not err.answerable:
            log.warning("undecodable request dropped: %s", err.reason)
            ex.silent = True
            return
        ex.mti, ex.fields = err.mti, dict(err.identity)
        ex.bank = self.banks.resolve(ex.fields["32"]) or ex.fields["32"]
        ex.echo_all = False
        ex.decide(err.response_code, err.er)

    async def identify_bank(self, ex: Exchange, link: Link) -> None:
        bank = self.banks.resolve(ex.fields.get("32", ""))
        if bank is None or bank not in link.allowed_banks or CHANNEL not in self.banks.channels(bank):
            ex.bank = ex.fields.get("32", "")
            ex.decide("58", "bank code not allowed on this link")
            return
        if link.bank is not None and link.bank != bank:
            ex.bank = bank
            ex.decide("58", "this connection belongs to another bank")
            return
        ex.bank = bank

    async def network_management(self, ex: Exchange, link: Link) -> None:
        if ex.mti != "0800":
            return
        ex.kind, ex.mac = "network", False
        action = NETWORK_CODES.get(ex.fields.get("70", ""))
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
        fields = responses.reply_fields(ex, self.calendar.business_date(ex.received_at))
        key = self.keys.current(ex.bank, CHANNEL) if ex.mac and ex.mti != "0800" else None
        return codec.encode(link.dialect, response_mti(ex.mti), fields, mac_key=key)
