"""What goes into an answer: the request's echoed fields (docs/spec/INTERFACE.md §4's E), field 15, 39 and 48.

Also turns requests into the ledger's postings, and the ledger's outcomes into answer fields.
"""
from __future__ import annotations

from datetime import date

from gateway.exchange import Exchange
from iso8583_specs.shapes import ECHOED_ANY, OriginalData
from iso8583_specs.tlv import FIELD_MAX_BYTES, byte_length
from ledger.money import fits
from ledger.posting import CounterPayment, PaymentReversal

ECHOED = ECHOED_ANY   # a request's fields that its answer carries back, whatever the answer
IDENTITY_ECHOED = ("7", "11", "12", "13", "32")   # all a 30 answer repeats (vectors.json "format error response")
ER_CODES = {"30", "40", "12"}                      # §5: ER only in answers with these codes
TLV_HEAD = 5                                       # tag (2) + length (3)
BI_ELEMENT = TLV_HEAD + 30                         # BI: period (6) + principal (12) + penalty (12)


def mmdd(day: date) -> str:
    return f"{day.month:02d}{day.day:02d}"


def reply_fields(ex: Exchange, business_date: date) -> dict[str, str]:
    fields = {f: ex.fields[f] for f in (ECHOED if ex.echo_all else IDENTITY_ECHOED) if f in ex.fields}
    if ex.echo_all:
        fields["15"] = mmdd(business_date)
    fields.update(ex.reply)
    fields["39"] = ex.code
    items = list(ex.reply_tlv)
    if ex.detail and ex.code in ER_CODES:
        items.append(("ER", ex.detail))
    if items:
        fields["48"] = _tlv_within(items)
    return fields


def _tlv_within(items: list[tuple[str, str]]) -> str:
    from iso8583_specs.tlv import build_tlv

    return build_tlv(items)


def n12(fen: int) -> str:
    if not (isinstance(fen, int) and fits(fen)):   # the ledger keeps amounts within this (ledger.money)
        raise ValueError(f"{fen!r} fen does not fit in 12 digits")
    return f"{fen:012d}"


def inquiry(ex: Exchange, result) -> None:
    """0110 (§4.3): the oldest unpaid bills that fit in field 48; BC and field 4 count them all."""
    customer = ex.first("CN")
    if result.response_code != "00":
        ex.reply = {"4": n12(0)}
        ex.reply_tlv = [("CN", customer)]
        ex.decide(result.response_code, getattr(result, "detail", ""))
        return
    head = [("CN", customer), ("NM", result.customer_name), ("BC", str(len(result.bills)))]
    tail = [("PB", n12(result.prepaid_balance))]
    room = (FIELD_MAX_BYTES - sum(TLV_HEAD + byte_length(v) for _, v in head + tail)) // BI_ELEMENT
    ex.reply = {"4": n12(result.total_due)}
    ex.reply_tlv = head + [("BI", f"{period}{n12(principal)}{n12(penalty)}")
                           for period, principal, penalty in result.bills[:max(0, room)]] + tail
    ex.decide("00")


def payment_posting(ex: Exchange, digest: str) -> CounterPayment:
    return CounterPayment(
        bank_code=ex.bank, transmitted=ex.fields["7"], stan=ex.fields["11"], rrn=ex.fields["37"],
        customer_no=ex.first("CN"), amount=int(ex.fields["4"]), method=ex.first("PM"),
        cheque_no=ex.first("CQ"), terminal_id=ex.fields.get("41", "").strip(),
        branch_id=ex.fields.get("42", "").strip(), digest=digest, received_at=ex.received_at)


def reversal_posting(ex: Exchange, digest: str, bank_by_number) -> PaymentReversal:
    original = OriginalData.parse(ex.fields["90"])
    orig_number = int(original.bank)
    return PaymentReversal(
        bank_code=ex.bank, transmitted=ex.fields["7"], stan=ex.fields["11"],
        orig_bank_code=bank_by_number(orig_number) or str(orig_number),
        orig_transmitted=original.transmitted, orig_stan=original.stan, amount=int(ex.fields["4"]),
        customer_no=ex.first("CN"), digest=digest, received_at=ex.received_at, rrn=ex.fields["37"])


def posting(ex: Exchange, outcome) -> None:
    """0210 / 04x0 answer fields from the ledger's outcome."""
    ex.replayed = outcome.replayed
    items = [("CN", ex.first("CN"))]
    if ex.kind == "payment" and outcome.response_code == "00":
        items += [("RN", outcome.fields["receipt_no"]), ("PB", n12(int(outcome.fields["prepaid_balance"])))]
    ex.reply_tlv = items
    ex.decide(outcome.response_code, outcome.detail)
