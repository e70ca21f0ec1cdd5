"""The counter channel end to end: a real gateway on real sockets and a real database (docs/spec/INTERFACE.md §4-§6)."""
import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway_harness import ZMKS, connected_bank, code_of, start_gateway, stop_all, tags
from iso8583_specs import keys as wire_keys
from ledger_helpers import add_banks, add_bill, add_customer, assert_ledger_verifies, new_engine

BANKS = ("01020000", "01050000")  # one ascii, one bcd


def seed(url, customers):
    engine = new_engine(url)
    with engine.begin() as conn:
        add_banks(conn, "01020000", "01030000", "01050000")
        for customer_no, kw, bills in customers:
            add_customer(conn, customer_no, **kw)
            for period, principal, penalty in bills:
                add_bill(conn, customer_no, period, principal, penalty)
    engine.dispose()


STANDARD = [
    ("0140580211", {"name": "广州市天河区张三"}, [("202609", 17568, 0), ("202610", 37535, 113)]),
    ("0140580212", {"prepay": "N"}, [("202610", 10000, 0)]),
    ("0140580213", {"status": "S"}, [("202610", 10000, 0)]),
    ("0140580214", {"prepay": "N"}, []),
]


@pytest.fixture
def gateway_url(db_url):
    seed(db_url, STANDARD)
    return db_url


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_sign_on_issues_mak_under_zmk(gateway_url, bank_code):
    gw = await start_gateway(reactor, gateway_url)
    bank = await connected_bank(reactor, gw, bank_code, sign_on=False)
    try:
        answer = await bank.sign_on()
        f = answer.message.fields
        assert answer.message.mti == "0810" and f["39"] == "00" and f["70"] == "001"
        assert "64" not in f and "128" not in f and "15" in f
        assert wire_keys.check_value(bank.mak) == answer.message.tlv.get("KV")
        assert bank.mak != wire_keys.decrypt_key(bytes.fromhex(ZMKS[bank_code]), bytes(16))
    finally:
        await stop_all(gw, bank)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_inquiry_pay_reverse(gateway_url, bank_code):
    gw = await start_gateway(reactor, gateway_url)
    bank = await connected_bank(reactor, gw, bank_code)
    try:
        inquiry = await bank.send("0100", bank.inquiry_fields("0140580211"))
        assert code_of(inquiry) == "00" and bank.mac_ok(inquiry)
        t = tags(inquiry)
        assert t["NM"] == "广州市天河区张三" and t["BC"] == "2" and t["PB"] == "0" * 12
        assert t["BI"] == ["202609000000017568000000000000", "202610000000037535000000000113"]
        assert inquiry.message.fields["4"] == "000000055216"

        pay_fields = bank.payment_fields("0140580211", 56216)
        paid = await bank.send("0200", pay_fields)
        assert code_of(paid) == "00" and bank.mac_ok(paid)
        assert tags(paid)["PB"] == "000000001000" and tags(paid)["RN"]
        for f in ("3", "4", "7", "11", "12", "13", "32", "37", "41", "42", "49"):
            assert paid.message.fields[f] == pay_fields[f]

        after = await bank.send("0100", bank.inquiry_fields("0140580211"))
        assert after.message.fields["4"] == "000000000000" and tags(after)["BC"] == "0"

        reversal = bank.reversal_fields(pay_fields)
        reversed_ = await bank.send("0420", reversal)
        assert code_of(reversed_) == "00" and reversed_.message.mti == "0430" and bank.mac_ok(reversed_)
        assert reversed_.message.fields["90"] == reversal["90"]
        again = await bank.send("0100", bank.inquiry_fields("0140580211"))
        assert again.message.fields["4"] == "000000055216"
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(gateway_url)
