"""The debit channel's financial requests (docs/spec/INTERFACE.md §4.6): a direct debit 0200/510000 and its reversal."""
from __future__ import annotations

from typing import Iterable

from iso8583_specs.links import times_of
from iso8583_specs.shapes import OriginalData
from iso8583_specs.tlv import Bill, Tlv, build_tlv

DEBIT = "510000"
CURRENCY = "156"


def original_data(mti: str, stan: str, transmitted: str, bank_code: str) -> str:
    """Field 90 (§3) of a reversal of the request ``mti`` ``stan``/``transmitted`` from ``bank_code``."""
    return OriginalData(mti, stan, transmitted, bank_code).encode()


def debit_fields(*, bank_code: str, transmitted: str, stan: str, rrn: str, customer_no: str, account_no: str,
                 bills: Iterable[Bill | tuple[str, int, int]], amount: int | None = None,
                 terminal_id: str = "GPDEBIT1", acceptor_id: str = "GRIDPAY") -> dict[str, str]:
    """A direct debit 0200/510000 (§4.6): field 4 = the sum of the bills (principal + penalty).
    Fixed fields come at full width, as they will be on the wire (text space-filled), so that
    the answer's echoed fields compare equal without decoding the request again.

    ``transmitted`` (field 7, MMDDhhmmss local time) also gives fields 12 and 13, so the same
    stored identity always rebuilds the same message."""
    items = [b if isinstance(b, Bill) else Bill(*b) for b in bills]
    if not items:
        raise ValueError("a debit needs at least one bill")
    total = sum(b.principal + b.penalty for b in items)
    if amount is not None and amount != total:
        raise ValueError(f"amount {amount} differs from the bills' sum {total}")
    if total <= 0:
        raise ValueError("a debit's amount must be > 0")
    return {"3": DEBIT, "4": f"{total:012d}", **times_of(transmitted), "11": stan.zfill(6), "32": bank_code,
            "37": rrn.ljust(12), "41": terminal_id.ljust(8), "42": acceptor_id.ljust(15),
            "48": build_tlv([("CN", customer_no)] + [("BI", b.encode()) for b in items]),
            "49": CURRENCY, "102": account_no}


def reversal_fields(original: dict[str, str], *, transmitted: str, stan: str) -> dict[str, str]:
    """A debit reversal 0420 (send it again unchanged as 0421) of the 0200 ``original`` fields
    (§4.6): its own 7/11, and field 90 / 4 / 37 / 48 CN from the original."""
    customer = Tlv.parse(original["48"]).get("CN")
    return {"3": DEBIT, "4": original["4"].zfill(12), **times_of(transmitted), "11": stan.zfill(6),
            "32": original["32"], "37": original["37"], "41": original["41"], "42": original["42"],
            "48": build_tlv([("CN", customer)]), "49": CURRENCY,
            "90": original_data("0200", original["11"], original["7"], original["32"])}
