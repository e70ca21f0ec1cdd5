"""Every response code the counter channel can give, over real sockets, in both dialects."""
from datetime import date

import pytest
import pytest_twisted
from sqlalchemy import insert, select
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from gateway.sim.counter_load import BAD_AMOUNT, corrupt_amount
from gateway_harness import Bank, connected_bank, code_of, start_gateway, stop_all, tags
from ledger.db import make_engine
from ledger.schema import business_day_closures, payments
from ledger_helpers import assert_ledger_verifies
from test_gateway_counter import BANKS, STANDARD, seed

CUSTOMER, NO_PREPAY, SUSPENDED, NOTHING_DUE = "0140580211", "0140580212", "0140580213", "0140580214"
DUE = 55216


@pytest.fixture
def url(db_url):
    seed(db_url, STANDARD)
    return db_url


async def session(url, bank_code="01020000", sign_on=True, clock=None):
    gw = await start_gateway(reactor, url, clock=clock)
    bank = await connected_bank(reactor, gw, bank_code, sign_on=sign_on)
    return gw, bank


def payments_count(url) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = len(conn.execute(select(payments.c.payment_id)).all())
    engine.dispose()
    return n


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_financial_before_sign_on_is_91_without_mac(url, bank_code):
    gw, bank = await session(url, bank_code, sign_on=False)
    try:
        answer = await bank.send("0100", bank.inquiry_fields(CUSTOMER), key=bytes(range(16)))
        assert code_of(answer) == "91"
        assert "64" not in answer.message.fields and "128" not in answer.message.fields
        echo = await bank.send("0800", {**bank.head(), "70": "301"}, key=False)
        assert code_of(echo) == "00" and echo.message.mti == "0810"
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_sign_off_drops_the_key(url):
    gw, bank = await session(url)
    try:
        off = await bank.send("0800", {**bank.head(), "70": "002"}, key=False)
        assert code_of(off) == "00"
        answer = await bank.send("0100", bank.inquiry_fields(CUSTOMER))
        assert code_of(answer) == "91"
    finally:
        await stop_all(gw, bank)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_bad_mac_is_A0_macd_with_current_key_and_changes_nothing(url, bank_code):
    gw, bank = await session(url, bank_code)
    try:
        wrong = bytes(b ^ 0xFF for b in bank.mak)
        answer = await bank.send("0200", bank.payment_fields(CUSTOMER, DUE), key=wrong)
        assert code_of(answer) == "A0" and bank.mac_ok(answer)
        assert payments_count(url) == 0
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_key_rollover_keeps_old_key_for_the_grace_period(url):
    clock = Clock()
    gw, first = await session(url, clock=clock)
    second = await connected_bank(reactor, gw)  # signs on again: a new MAK replaces the first
    try:
        old = first.mak
        assert second.mak != old
        answer = await first.send("0100", first.inquiry_fields(CUSTOMER))
        assert code_of(answer) == "00"
        assert second.mac_ok(answer) and not first.mac_ok(answer)  # answers use the current key
        clock.advance(61)
        answer = await first.send("0100", first.inquiry_fields(CUSTOMER))
        assert code_of(answer) == "A0"
        answer = await second.send("0100", second.inquiry_fields(CUSTOMER))
        assert code_of(answer) == "00"
    finally:
        await stop_all(gw, first, second)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_undecodable_content_is_30_with_ER(url, bank_code):
    gw, bank = await session(url, bank_code)
    try:
        fields = bank.payment_fields(CUSTOMER, int(BAD_AMOUNT))
        answer = await bank.send_raw(corrupt_amount(bank.dialect, bank.encode("0200", fields)), fields)
        assert code_of(answer) == "30" and bank.mac_ok(answer)
        assert answer.message.tlv.get("ER").startswith("field 4")
        assert set(answer.message.fields) <= {"7", "11", "12", "13", "32", "39", "48", "64"}
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_missing_mandatory_content_is_30(url):
    gw, bank = await session(url)
    try:
        cheque_without_number = bank.payment_fields(CUSTOMER, DUE, method="03")
        answer = await bank.send("0200", cheque_without_number)
        assert code_of(answer) == "30" and "CQ" in answer.message.tlv.get("ER")
        no_customer = {**bank.inquiry_fields(CUSTOMER), "48": "PM00201"}
        answer = await bank.send("0100", no_customer)
        assert code_of(answer) == "30" and "CN" in answer.message.tlv.get("ER")
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_unknown_processing_code_and_mti_are_40(url):
    gw, bank = await session(url)
    try:
        debit_on_counter = bank.financial("510000", f"CN010{CUSTOMER}", **{"4": f"{DUE:012d}", "102": "6222000011112222"})
        answer = await bank.send("0200", debit_on_counter)
        assert code_of(answer) == "40"
        odd = bank.financial("999999", f"CN010{CUSTOMER}")
        answer = await bank.send("0100", odd)
        assert code_of(answer) == "40" and answer.message.tlv.get("ER")
        answer = await bank.send("0300", bank.financial("310000", f"CN010{CUSTOMER}"))
        assert code_of(answer) == "40" and answer.message.mti == "0310"
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_bank_not_allowed_on_link_is_58(url):
    gw, bank = await session(url)
    try:
        for foreign in ("01050000", "09990000"):  # a bcd-port bank, and no bank at all
            fields = {**bank.inquiry_fields(CUSTOMER), "32": foreign}
            answer = await bank.send("0100", fields)
            assert code_of(answer) == "58"
    finally:
        await stop_all(gw, bank)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_customer_and_amount_codes(url, bank_code):
    gw, bank = await session(url, bank_code)
    try:
        assert code_of(await bank.send("0100", bank.inquiry_fields("0999999999"))) == "14"
        assert code_of(await bank.send("0200", bank.payment_fields("0999999999", 100))) == "14"
        assert code_of(await bank.send("0100", bank.inquiry_fields(SUSPENDED))) == "B2"
        assert code_of(await bank.send("0200", bank.payment_fields(SUSPENDED, 10000))) == "B2"
        assert code_of(await bank.send("0200", bank.payment_fields(CUSTOMER, DUE - 1))) == "13"
        assert code_of(await bank.send("0200", bank.payment_fields(NOTHING_DUE, 500))) == "B1"
        assert code_of(await bank.send("0200", bank.payment_fields(NO_PREPAY, 10000))) == "00"
        assert code_of(await bank.send("0200", bank.payment_fields(NO_PREPAY, 10000))) == "B1"
        cheque = await bank.send("0200", bank.payment_fields(CUSTOMER, DUE, method="03", cheque="CHQ7781234"))
        assert code_of(cheque) == "00"
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(url)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_duplicates_replay_or_94(url, bank_code):
    gw, bank = await session(url, bank_code)
    try:
        fields = bank.payment_fields(CUSTOMER, DUE)
        first = await bank.send("0200", fields)
        repeat = await bank.send("0200", fields)
        assert code_of(first) == code_of(repeat) == "00"
        assert tags(first)["RN"] == tags(repeat)["RN"]
        other_content = {**fields, "4": f"{DUE + 100:012d}"}
        assert code_of(await bank.send("0200", other_content)) == "94"
        same_rrn = bank.payment_fields(NO_PREPAY, 10000, rrn=fields["37"])
        assert code_of(await bank.send("0200", same_rrn)) == "94"
        assert payments_count(url) == 1
        assert gw.metrics.duplicates.labels(bank_code)._value.get() == 1
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(url)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_rrn_of_another_financial_request_is_94(url, bank_code):
    """docs/spec/INTERFACE.md §4.7: payments and reversals, answered or declined, take their RRN
    for the bank and business date (a reversal carries its payment's or one of its own); inquiries
    take none; a repeat (same 32/7/11 and content) gets its own answer."""
    gw, bank = await session(url, bank_code)
    try:
        declined = bank.payment_fields(CUSTOMER, DUE - 1)
        assert code_of(await bank.send("0200", declined)) == "13"
        inquiry = bank.financial("310000", f"CN{len(CUSTOMER):03d}{CUSTOMER}", rrn=declined["37"])
        assert code_of(await bank.send("0100", inquiry)) == "00"
        assert code_of(await bank.send("0200", bank.payment_fields(CUSTOMER, DUE, rrn=declined["37"]))) == "94"
        assert code_of(await bank.send("0200", declined)) == "13"                    # its repeat

        pay, other = bank.payment_fields(CUSTOMER, DUE), bank.payment_fields(NO_PREPAY, 10000)
        assert [code_of(await bank.send("0200", f)) for f in (pay, other)] == ["00", "00"]
        assert code_of(await bank.send("0420", bank.reversal_fields(other, rrn=pay["37"]))) == "94"
        reversal = bank.reversal_fields(pay, rrn=bank.next_rrn())
        assert code_of(await bank.send("0420", reversal)) == "00"
        assert code_of(await bank.send("0421", reversal)) == "00"                    # its repeat
        assert code_of(await bank.send("0400", bank.reversal_fields(pay))) == "00"   # the payment's RRN
        assert code_of(await bank.send("0200", bank.payment_fields(NOTHING_DUE, 500, rrn=reversal["37"]))) == "94"
        assert payments_count(url) == 2
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(url)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_reversal_rules(url, bank_code):
    gw, bank = await session(url, bank_code)
    try:
        pay = bank.payment_fields(CUSTOMER, DUE)
        assert code_of(await bank.send("0200", pay)) == "00"
        assert code_of(await bank.send("0420", bank.reversal_fields(pay, amount=DUE - 1))) == "13"
        advice = bank.reversal_fields(pay)
        assert code_of(await bank.send("0420", advice)) == "00"
        repeat = await bank.send("0421", advice)  # the bank's repeat of its 0420
        assert code_of(repeat) == "00" and repeat.message.mti == "0430"
        assert code_of(await bank.send("0400", bank.reversal_fields(pay))) == "00"  # already reversed

        # a reversal whose original never arrived: 25, remembered; the late original gets 12
        late = bank.payment_fields(NO_PREPAY, 10000)
        assert code_of(await bank.send("0420", bank.reversal_fields(late))) == "25"
        answer = await bank.send("0200", late)
        assert code_of(answer) == "12" and answer.message.tlv.get("ER")

        # an 0421 whose 0420 never arrived is processed as the 0420
        pay2 = bank.payment_fields(NO_PREPAY, 10000)
        assert code_of(await bank.send("0200", pay2)) == "00"
        assert code_of(await bank.send("0421", bank.reversal_fields(pay2))) == "00"
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(url)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_reversal_gives_back_the_prepaid_its_payment_used(url, bank_code):
    """§4.5: the inquiry after the reversal is the inquiry before the payment; a reversal whose
    payment's prepaid has since been used is 12 with ER."""
    from ledger_helpers import add_bill

    gw, bank = await session(url, bank_code)
    try:
        first = bank.payment_fields(CUSTOMER, DUE + 1000)
        assert code_of(await bank.send("0200", first)) == "00"                       # 1,000 prepaid
        engine = make_engine(url)
        with engine.begin() as conn:
            add_bill(conn, CUSTOMER, "202611", 5000)
        engine.dispose()
        before = await bank.send("0100", bank.inquiry_fields(CUSTOMER))
        assert before.message.fields["4"] == f"{4000:012d}" and tags(before)["PB"] == f"{1000:012d}"
        pay = bank.payment_fields(CUSTOMER, 4000)
        paid = await bank.send("0200", pay)
        assert code_of(paid) == "00" and tags(paid)["PB"] == "0" * 12
        assert code_of(await bank.send("0420", bank.reversal_fields(pay))) == "00"
        after = await bank.send("0100", bank.inquiry_fields(CUSTOMER))
        assert (after.message.fields["4"], tags(after)) == (before.message.fields["4"], tags(before))

        assert code_of(await bank.send("0200", pay | bank.head() | {"37": bank.next_rrn()})) == "00"   # uses it again
        undone = await bank.send("0420", bank.reversal_fields(first))
        assert code_of(undone) == "12" and "prepaid" in undone.message.tlv.get("ER")
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(url)


@pytest_twisted.ensureDeferred
async def test_reversal_after_reconciliation_closed_the_day_is_12(url):
    gw, bank = await session(url)
    try:
        pay = bank.payment_fields(CUSTOMER, DUE)
        paid = await bank.send("0200", pay)
        assert code_of(paid) == "00"
        month, day = int(paid.message.fields["15"][:2]), int(paid.message.fields["15"][2:])
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(insert(business_day_closures), {
                "bank_code": "01020000", "business_date": date(date.today().year, month, day),
                "closed_at": __import__("datetime").datetime.now(__import__("datetime").timezone.utc),
                "closed_by": "test", "recon_run_id": None})
        engine.dispose()
        answer = await bank.send("0420", bank.reversal_fields(pay))
        assert code_of(answer) == "12" and answer.message.tlv.get("ER")
    finally:
        await stop_all(gw, bank)


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_many_requests_outstanding_on_one_connection(url, bank_code):
    gw, bank = await session(url, bank_code)
    try:
        sent = [bank.inquiry_fields(CUSTOMER) for _ in range(40)]
        answers = await defer.gatherResults([defer.ensureDeferred(bank.send("0100", f)) for f in sent])
        assert [a.message.fields["11"] for a in answers] == [f["11"] for f in sent]
        assert all(code_of(a) == "00" for a in answers)
    finally:
        await stop_all(gw, bank)
