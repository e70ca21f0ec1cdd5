"""Logs mask customer and account numbers: every line of every process passes through
runtime.logging_setup, whose handlers' streams mask what they write (issue 16, defect 10)."""
from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway_harness import ZMKS, Bank
from iso8583_specs import codec
from iso8583_specs import keys as wire_keys
from iso8583_specs.framing import encode_frame
from ledger_helpers import add_banks, new_engine, setup_customers
from runtime.logging_setup import LINE_FORMAT, mask_line, setup_logging
from process_harness import GatewayProcess

ROOT = Path(__file__).resolve().parent.parent
BANK = "01020000"
UNKNOWN = "9988776655443"


@pytest.mark.parametrize("line, masked", [
    ('"detail": "no customer 9988776655443"', '"detail": "no customer 9988*****5443"'),
    ("posting CounterPayment(bank_code='01020000', customer_no='C00000001', amount=5000)",
     "posting CounterPayment(bank_code='01020000', customer_no='*******01', amount=5000)"),
    ('"customer": "9988*****5443"', '"customer": "9988*****5443"'),                 # masked already
    ("48=CN0100100000011PM00201", "48=CN010********11PM00201"),                      # a field 48 element
    ("Account_No: 6222021001122334455", "Account_No: 6222***********4455"),
    ("acct=62220210 mobile 13800138000", "acct=******10 mobile *********00"),
    ("[parameters: ('01020000', 'C00000001', 5000)]", "[parameters: ('******00', '*******01', 5000)]"),
    ("DETAIL:  Key (bank_code, customer_no)=(01020000, C00000001) already exists.",
     "DETAIL:  Key (bank_code, customer_no)=(******00, *******01) already exists."),
    ("field 2 6222021001122334455 rejected", "field 2 6222***********4455 rejected"),
    # what carries no number, or no customer's, stays as it is
    ("customer suspended; customer not found; account closed; 3 customers", None),
    ("rrn 000000000123 amount 000000056216 receipt R2026120212345 stan 000123 bank 01020000", None),
    ("90=020000012312020930450000102000000000000000 sha 12345678901234567890123", None),
    ("cn 12345 discard 12345678 company 123456", None),
])
def test_mask_line(line, masked):
    assert mask_line(line) == (line if masked is None else masked)


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level, last_resort = root.handlers[:], root.level, logging.lastResort
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], logging.lastResort = handlers, last_resort
    root.setLevel(level)


def test_every_line_written_to_the_log_file_is_masked(tmp_path, restore_logging):
    from gateway import txlog
    from gateway.exchange import Exchange

    log_file = tmp_path / "gridpay.log"
    setup_logging(str(log_file))
    logging.getLogger("gridpay.test").info("posting %r", {"customer_no": "C00000001"})
    try:
        raise ValueError("[parameters: ('C00000002', 100)]")
    except ValueError:
        logging.getLogger("gridpay.test").exception("cannot post for account 6222021001122334455")
    # the transaction log writes its lines into the stream itself, and still may
    assert txlog._direct_handlers() is not None
    ex = Exchange(frame=b"", tpdu=None, received=time.monotonic(), received_at=datetime.now(timezone.utc),
                  mti="0200", fields={"32": BANK, "11": "000001"}, code="14", kind="payment",
                  detail="no customer C00000003")
    txlog.log_exchange(ex, time.monotonic())
    txlog.flush()
    text = log_file.read_text()
    for number in ("C00000001", "C00000002", "6222021001122334455", "C00000003"):
        assert number not in text
    assert "*******01" in text and "*******02" in text and "6222***********4455" in text
    assert '"detail": "no customer *******03"' in text


def test_the_worker_processes_log_through_the_same_set_up(tmp_path, restore_logging):
    from runtime import worker_child as batch_child

    log_file = tmp_path / "worker.log"
    batch_child._setup_logging(str(log_file))
    logging.getLogger("gridpay.ledger").info("integrity conflict posting customer_no='C00000001'")
    logging.getLogger().handlers[0].flush()
    assert "customer_no='*******01'" in log_file.read_text()
    assert logging.getLogger().handlers[0].formatter._fmt == LINE_FORMAT


def test_commands_that_set_up_no_logging_print_masked_warnings():
    """`gridpay` masks Python's handler of last resort before running any command."""
    code = ("import logging\n"
            "from gridpay.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "logging.getLogger('gridpay.x').warning('unknown customer C00000001')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "unknown customer *******01" in run.stderr and "C00000001" not in run.stderr


def test_logging_is_set_up_in_one_place():
    """No module but runtime/logging_setup.py makes handlers or configures the root logger."""
    setting_up = re.compile(r"basicConfig\(|logging\.(?:FileHandler|StreamHandler)\(|\.addHandler\(|"
                            r"handlers\[:\]\s*=|dictConfig\(|fileConfig\(")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for package in ("config", "engines", "gateway", "iso8583_specs",
                                                                 "ledger")
                 for path in sorted((ROOT / package).rglob("*.py")) if path != ROOT / "config" / "logs.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if setting_up.search(line)]
    assert offenders == []


class BlockingCounter:
    """A bank's counter on a plain socket, with the harness's message builders."""

    def __init__(self, port: int):
        self.bank = Bank(None, None, BANK)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.framer = self.bank.dialect.framer(65535)

    def send(self, mti: str, fields: dict, key=True):
        self.sock.sendall(encode_frame(self.bank.dialect.framing, self.bank.encode(mti, fields, key)))
        while True:
            for frame in self.framer.feed(self.sock.recv(65536)):
                message = codec.decode(self.bank.dialect, frame.message)
                if message.mti != "0800":  # not an echo of the gateway's
                    return message

    def sign_on(self) -> None:
        answer = self.send("0800", {**self.bank.head(), "70": "001"}, key=False)
        self.bank.mak = wire_keys.read_sign_on_field48(bytes.fromhex(ZMKS[BANK]), answer.fields["48"])


def test_a_gateway_log_holds_no_full_customer_number(tmp_path, db_url):
    """`gridpay serve`: 14 declines of an inquiry and a payment, a payment, a reversal naming
    another customer; its log (transaction lines and all) names each customer only masked."""
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, "01020000", "01030000", "01050000")
    paying, other = setup_customers(engine, 2)
    engine.dispose()
    gw = GatewayProcess(tmp_path, db_url).start()
    try:
        counter = BlockingCounter(gw.ports["ascii"])
        counter.sign_on()
        bank = counter.bank
        assert counter.send("0100", bank.inquiry_fields(UNKNOWN)).fields["39"] == "14"
        assert counter.send("0200", bank.payment_fields(UNKNOWN, 100)).fields["39"] == "14"
        due = int(counter.send("0100", bank.inquiry_fields(paying)).fields["4"])
        payment = bank.payment_fields(paying, due)
        assert counter.send("0200", payment).fields["39"] == "00"
        reversal = {**bank.reversal_fields(payment, rrn=bank.next_rrn()), "48": f"CN{len(other):03d}{other}"}
        assert counter.send("0420", reversal).fields["39"] == "12"
        counter.sock.close()
    finally:
        assert gw.terminate() == 0
    text = gw.log.read_text()
    assert text.count('"rc": "14"') == 2 and '"customer": "9988*****5443"' in text
    for number in (UNKNOWN, paying, other):
        assert number not in text, [line for line in text.splitlines() if number in line]
