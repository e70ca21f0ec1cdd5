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


NAME_60 = "广州市天河区珠江新城华夏路" * 2 + "花城大道"  # 60 GBK bytes
MANY = [(f"{2023 + m // 12}{m % 12 + 1:02d}", 10_000 + m, m % 3 * 50) for m in range(40)]


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_inquiry_lists_the_oldest_bills_that_fit_and_counts_them_all(db_url, bank_code):
    """§4.3: BC and field 4 cover all 40 unpaid bills; field 48 lists the oldest that fit in 999 bytes,
    and a payment of field 4 pays all 40."""
    from iso8583_specs import codec, shapes
    from ledger.schema import allocations, bills
    from sqlalchemy import func, select

    assert len(NAME_60.encode("gbk")) == 60
    seed(db_url, [("0140589999", {"name": NAME_60}, MANY)])
    gw = await start_gateway(reactor, db_url)
    bank = await connected_bank(reactor, gw, bank_code)
    try:
        request = bank.inquiry_fields("0140589999")
        inquiry = await bank.send("0100", request)
        assert code_of(inquiry) == "00" and bank.mac_ok(inquiry)
        shapes.validate_response(inquiry.message, codec.decode(bank.dialect, bank.encode("0100", request)))
        t = tags(inquiry)
        listed = [f"{period}{principal:012d}{penalty:012d}" for period, principal, penalty in MANY][:len(t["BI"])]
        assert t["NM"] == NAME_60 and t["BC"] == "40" and t["BI"] == listed
        field48 = inquiry.message.fields["48"].encode("gbk")
        assert len(field48) <= 999 < len(field48) + 35      # no room for another BI element
        total = sum(principal + penalty for _, principal, penalty in MANY)
        assert int(inquiry.message.fields["4"]) == total

        paid = await bank.send("0200", bank.payment_fields("0140589999", total))
        assert code_of(paid) == "00" and tags(paid)["PB"] == "0" * 12
        after = await bank.send("0100", bank.inquiry_fields("0140589999"))
        assert after.message.fields["4"] == "0" * 12 and tags(after)["BC"] == "0" and "BI" not in tags(after)
    finally:
        await stop_all(gw, bank)
    engine = new_engine(db_url)
    with engine.connect() as conn:
        owed = conn.execute(select(bills.c.bill_id, bills.c.principal + bills.c.penalty
                                   - func.coalesce(select(func.sum(allocations.c.amount))
                                                   .where(allocations.c.bill_id == bills.c.bill_id)
                                                   .scalar_subquery(), 0))).all()
    engine.dispose()
    assert len(owed) == 40 and all(left == 0 for _, left in owed)
    assert_ledger_verifies(db_url)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_counter_simulator_follows_contract_1_1(db_url, bank_code):
    """`gridpay sim counter` against a real gateway: customers with more unpaid bills than field 48
    lists (not a mismatch), reversals under RRNs of their own (no 94), repeats replayed."""
    from gateway.sim.counter_load import CounterSimulator, Mix
    from gateway_harness import DIALECT_OF
    from iso8583_specs.dialects import get_dialect

    customers = [f"01405{n:05d}" for n in range(30)]
    seed(db_url, [(c, {"name": NAME_60}, MANY if n % 3 == 0 else MANY[:2]) for n, c in enumerate(customers)])
    gw = await start_gateway(reactor, db_url)
    listener = "ascii" if DIALECT_OF[bank_code] == "ascii" else "bcd"
    try:
        sim = CounterSimulator(reactor, "127.0.0.1", gw.port_of(listener), get_dialect(DIALECT_OF[bank_code]),
                               bank_code, bytes.fromhex(ZMKS[bank_code]), customers, connections=2, window=3,
                               mix=Mix(pay=60, reverse=25, repeat=15), seed=7)
        report = await sim.run()
    finally:
        await stop_all(gw)
    assert report.mismatches == []
    assert report.ops["reverse"] > 0 and report.ops["repeat"] > 0 and "94" not in report.codes
    assert_ledger_verifies(db_url)
