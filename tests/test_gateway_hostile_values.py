"""Values a bank should never send, over real sockets against a real database: a control byte in a
text field is answered 30 before anything is posted (docs/spec/INTERFACE.md §3 formats an and ans),
and an amount that would take a prepaid balance past the 12 digits of PB is declined 13 (§5)."""
import pytest
import pytest_twisted
from sqlalchemy import func, select
from twisted.internet import reactor

from gateway_harness import answer_or_none, code_of, connected_bank, start_gateway, stop_all, tags
from ledger.schema import payments
from ledger_helpers import add_banks, add_bill, add_customer, assert_ledger_verifies, new_engine

BANKS = ("01020000", "01050000")  # one ascii, one bcd
LARGEST = 10 ** 12 - 1            # 999,999,999,999 fen


def seed(url, *customers):
    engine = new_engine(url)
    with engine.begin() as conn:
        add_banks(conn, "01020000", "01030000", "01050000")
        for customer_no in customers:
            add_customer(conn, customer_no)
    engine.dispose()


def payments_of(url, customer_no) -> list[int]:
    engine = new_engine(url)
    with engine.connect() as conn:
        amounts = conn.execute(select(payments.c.amount).where(payments.c.customer_no == customer_no)).scalars().all()
    engine.dispose()
    return amounts


def tampered(bank, mti: str, fields: dict, old: bytes, new: bytes) -> bytes:
    """The request as encoded, with ``old`` replaced by ``new`` on the wire and the MAC made again
    over the result: what a bank's faulty software would send."""
    dialect = bank.dialect
    iso = bytearray(bank.encode(mti, fields))
    at = iso.index(old)
    iso[at:at + len(old)] = new
    size = dialect.fields.mac_len
    iso[-size:] = dialect.fields.mac_wire(dialect.mac(bank.mak, bytes(iso[:-size])))
    return bytes(iso)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest.mark.parametrize("field, old, new", [
    ("41", b"TERM0001", b"TERM\x0001"),
    ("42", b"BR4401000000001", b"BR44010\x0000001"),
    ("37", b"000000000002", b"00000\x00000002"),
    ("48", b"PM00201", b"PM002\x011"),
])
@pytest_twisted.ensureDeferred
async def test_a_control_byte_in_a_text_field_is_answered_30_and_nothing_posted(db_url, bank_code, field, old, new):
    seed(db_url, "C001")
    gw = await start_gateway(reactor, db_url)
    bank = await connected_bank(reactor, gw, bank_code)
    try:
        bank.next_rrn()   # the payment's RRN is 000000000002
        fields = bank.payment_fields("C001", 100)
        answer = await bank.send_raw(tampered(bank, "0200", fields, old, new), fields)
        assert code_of(answer) == "30", tags(answer)
        assert field in tags(answer)["ER"] or "48" in tags(answer)["ER"]
        good = await bank.send("0200", bank.payment_fields("C001", 100))   # the bank's next request is served
        assert code_of(good) == "00"
    finally:
        await stop_all(gw, bank)
    assert payments_of(db_url, "C001") == [100]
    assert_ledger_verifies(db_url)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_a_payment_that_would_overflow_the_prepaid_balance_is_declined_13(db_url, bank_code):
    """PB carries 12 digits: a payment taking the balance to 10^12 fen is declined before it is
    posted, and the customer stays answerable."""
    seed(db_url, "C001")
    gw = await start_gateway(reactor, db_url)
    bank = await connected_bank(reactor, gw, bank_code)
    try:
        first = await bank.send("0200", bank.payment_fields("C001", LARGEST))
        assert code_of(first) == "00" and tags(first)["PB"] == f"{LARGEST:012d}"
        for amount in (1, LARGEST):
            more = await answer_or_none(bank, "0200", bank.payment_fields("C001", amount), within=5)
            assert more is not None and code_of(more) == "13"
        inquiry = await bank.send("0100", bank.inquiry_fields("C001"))
        assert code_of(inquiry) == "00" and tags(inquiry)["PB"] == f"{LARGEST:012d}"
    finally:
        await stop_all(gw, bank)
    assert payments_of(db_url, "C001") == [LARGEST]
    assert_ledger_verifies(db_url)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_an_amount_due_past_12_digits_is_answered_13_not_left_unanswered(db_url, bank_code):
    """Bills that each fit but together owe 10^12 fen or more: field 4 cannot carry the total, so
    the inquiry is declined 13; another customer's inquiry on the same link is answered."""
    seed(db_url, "C001", "C002")
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_bill(conn, "C001", "202609", 600_000_000_000, 0)
        add_bill(conn, "C001", "202610", 400_000_000_000, 0)
        add_bill(conn, "C002", "202610", 100, 0)
    engine.dispose()
    gw = await start_gateway(reactor, db_url)
    bank = await connected_bank(reactor, gw, bank_code)
    try:
        big = await answer_or_none(bank, "0100", bank.inquiry_fields("C001"), within=5)
        assert big is not None and code_of(big) == "13"
        small = await bank.send("0100", bank.inquiry_fields("C002"))
        assert code_of(small) == "00" and small.message.fields["4"] == "000000000100"
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(db_url)
