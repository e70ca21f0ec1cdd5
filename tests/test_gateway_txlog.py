"""The transaction log line is built by hand for speed: it must be what json.dumps would write."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pytest

from gateway import txlog
from gateway.exchange import Exchange
from iso8583_specs import codec, get_dialect
from iso8583_specs.masking import mask_number

MAK = bytes.fromhex("89B07B35A1B3F47E4C7D2A0B91E3C5D7")
PAYMENT = {"3": "500000", "4": "000000056216", "7": "1123101530", "11": "000123", "12": "101530", "13": "1123",
           "32": "01020000", "37": "000000123456", "41": "TERM0001", "42": "BR4401000000001",
           "48": "CN0100140580211PM00201", "49": "156"}


def reference(ex, now: float) -> str:
    record = {"bank": ex.bank or ex.fields.get("32", ""), "mti": ex.mti, "pc": ex.processing_code,
              "stan": ex.fields.get("11", ""), "rrn": ex.fields.get("37", ""),
              "rc": ex.code if not ex.silent else None, "latency_ms": round((now - ex.received) * 1000, 2),
              "kind": ex.kind}
    customer = ex.first("CN")
    if customer:
        record["customer"] = mask_number(customer)
    if ex.fields.get("4"):
        record["amount"] = int(ex.fields["4"]) if ex.fields["4"].isdigit() else ex.fields["4"]
    if ex.replayed:
        record["replayed"] = True
    if ex.detail:
        record["detail"] = ex.detail
    return json.dumps(record, ensure_ascii=False)


def exchange(**changes) -> Exchange:
    dialect = get_dialect("ascii")
    message = codec.decode(dialect, codec.encode(dialect, "0200", PAYMENT, MAK))
    ex = Exchange(frame=message.raw, tpdu=None, received=100.0, received_at=datetime.now(timezone.utc))
    ex.mti, ex.fields, ex.message, ex.bank, ex.kind = message.mti, dict(message.fields), message, "01020000", "payment"
    for name, value in changes.items():
        setattr(ex, name, value)
    return ex


@pytest.mark.parametrize("changes", [
    {"code": "00"}, {"code": "00", "replayed": True}, {"silent": True}, {"code": None},
    {"code": "30", "detail": 'field 4: "12X" 不是数字\\ \n tab\t'}, {"code": "58", "bank": ""},
    {"code": "30", "fields": {"4": "12X4", "32": "0102", "11": "1\x7f"}, "message": None, "mti": None},
])
def test_line_is_what_json_dumps_writes(changes):
    ex = exchange(**changes)
    for now in (100.0, 100.0123456, 101.5, 1e9):
        assert txlog.transaction_json(ex, now) == reference(ex, now)


def test_lines_written_directly_look_like_log_records(tmp_path):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.FileHandler(tmp_path / "g.log")
    handler.setFormatter(logging.Formatter(txlog.LINE_FORMAT))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        assert txlog._direct_handlers() == (handler,)
        txlog.log_exchange(exchange(code="00"), 100.5)
        logging.getLogger("gridpay.other").info("a record")
        txlog.flush()
        written = (tmp_path / "g.log").read_text().splitlines()
        assert len(written) == 2
        direct, ordinary = written
        assert direct[24:].startswith("INFO gridpay.tx ") and ordinary[24:] == "INFO gridpay.other a record"
        assert direct.split(" gridpay.tx ", 1)[1] == reference(exchange(code="00"), 100.5)
        datetime.strptime(direct[:23], "%Y-%m-%d %H:%M:%S,%f")
    finally:
        handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_lines_over_a_connection_allowance_are_held_and_counted(caplog):
    """Dropped frames' lines spend the connection's allowance; the next line written says how many
    were held back, and the bytes the connection sends earn more (up to the most it may hold)."""
    caplog.set_level(logging.INFO, logger="gridpay.tx")
    allowance = txlog.Allowance(start=600, per_byte=1.0, most=1000)
    dropped = exchange(silent=True, kind="", detail="not answered: message: too short")
    for _ in range(5):
        txlog.log_exchange(dropped, 100.5, allowance)
    written = [r.getMessage() for r in caplog.records]
    assert len(written) == 2 and allowance.held == 3
    allowance.earn(10_000)
    assert allowance.left == 1000
    txlog.log_exchange(dropped, 100.5, allowance)
    last = json.loads(caplog.records[-1].getMessage())
    assert last["not_logged_before"] == 3 and last["rc"] is None and allowance.held == 0
