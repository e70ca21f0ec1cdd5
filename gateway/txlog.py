"""One structured log line per transaction, with customer and account numbers masked."""
from __future__ import annotations

import json
import logging

from iso8583_specs.masking import mask_number

log = logging.getLogger("gridpay.tx")


def log_exchange(ex, now: float) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    record = {
        "bank": ex.bank or ex.fields.get("32", ""), "mti": ex.mti, "pc": ex.processing_code,
        "stan": ex.fields.get("11", ""), "rrn": ex.fields.get("37", ""), "rc": ex.code if not ex.silent else None,
        "latency_ms": round((now - ex.received) * 1000, 2), "kind": ex.kind,
    }
    customer = ex.first("CN")
    if customer:
        record["customer"] = mask_number(customer)
    if ex.fields.get("4"):
        record["amount"] = int(ex.fields["4"]) if ex.fields["4"].isdigit() else ex.fields["4"]
    if ex.replayed:
        record["replayed"] = True
    if ex.detail:
        record["detail"] = ex.detail
    log.info(json.dumps(record, ensure_ascii=False))
