"""One clock (config/clock.py): every "now", local time and business date in gridpay comes from the
clock a process is handed. A counter payment over a real socket, on a gateway whose clock stands at
22:59:59 and then at 23:00:01 in Shanghai, lands on two business dates, and field 15 of each answer
says which."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import reactor
from twisted.internet.task import Clock as Timer

from config.clock import SYSTEM_CLOCK, Clock, ManualClock, as_clock
from gateway_harness import code_of, connected_bank, start_gateway, stop_all
from iso8583_specs.links import times_at
from ledger.db import make_engine
from ledger.schema import bank_requests, journal_entries, payments
from ledger_helpers import assert_ledger_verifies
from test_gateway_counter import BANKS, STANDARD, seed

SHANGHAI = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[1]
EVE, MORNING = "0140580211", "0140580212"    # owe 55,216 and 10,000 fen (tests/test_gateway_counter.py)


def at_local(*args) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


# --- the clock itself ---------------------------------------------------------------------------

@pytest.mark.parametrize("local, expected", [
    ((2026, 3, 14, 0, 0, 0), date(2026, 3, 14)),
    ((2026, 3, 14, 22, 59, 59), date(2026, 3, 14)),
    ((2026, 3, 14, 23, 0, 0), date(2026, 3, 15)),
    ((2026, 3, 14, 23, 59, 59), date(2026, 3, 15)),
    ((2026, 12, 31, 23, 0, 0), date(2027, 1, 1)),
])
def test_the_business_date_rolls_at_the_cutoff_in_the_business_timezone(local, expected):
    clock = Clock("Asia/Shanghai", "23:00")
    assert clock.business_date(at_local(*local)) == expected
    assert clock.business_date(at_local(*local).astimezone(timezone.utc)) == expected   # same instant in UTC


def test_another_timezone_and_cutoff_are_the_sites_to_choose():
    clock = Clock("Europe/Berlin", "18:30")
    evening = datetime(2026, 6, 1, 16, 30, tzinfo=timezone.utc)          # 18:30 in Berlin (summer time)
    assert clock.business_date(evening) == date(2026, 6, 2)
    assert clock.business_date(evening - timedelta(seconds=1)) == date(2026, 6, 1)
    assert clock.local(evening).utcoffset() == timedelta(hours=2)


def test_a_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="aware"):
        SYSTEM_CLOCK.business_date(datetime(2026, 3, 14, 12, 0))


def test_a_clock_on_a_timer_reads_the_timer_and_arms_its_timers_there():
    timer = Timer()
    timer.advance(at_local(2026, 3, 14, 22, 59, 59).timestamp())
    clock = Clock(timer=timer)
    fired = []
    clock.callLater(2, fired.append, "due")
    assert clock.now() == at_local(2026, 3, 14, 22, 59, 59)
    assert clock.now().tzinfo == timezone.utc                          # the database's zone
    assert clock.business_date() == date(2026, 3, 14)
    timer.advance(2)
    assert fired == ["due"] and clock.business_date() == date(2026, 3, 15)
    assert clock.local().strftime("%H:%M:%S") == "23:00:01"


def test_a_manual_clock_stands_still_until_moved():
    clock = ManualClock(at_local(2026, 3, 14, 22, 59, 59))
    assert clock.now() == clock.now() == at_local(2026, 3, 14, 22, 59, 59)
    clock.advance(2)
    assert clock.business_date() == date(2026, 3, 15)
    with pytest.raises(RuntimeError, match="no timer"):
        clock.callLater(1, print)


def test_a_part_handed_a_bare_timer_reads_it_under_the_default_calendar():
    timer = Timer()
    clock = as_clock(timer)
    assert clock.timer is timer and (clock.timezone, clock.cutoff) == ("Asia/Shanghai", "23:00")
    mine = Clock("Asia/Shanghai", "22:00")
    assert as_clock(mine) is mine
    assert as_clock(None, timer).timer is timer


# --- nothing reads the time behind the clock's back ---------------------------------------------

LIBRARY = ("config", "iso8583_specs", "runtime", "ledger", "gateway", "engines", "gridpay")
BEHIND_THE_CLOCK = re.compile(r"datetime\.now\(|datetime\.utcnow\(|date\.today\(|Asia/Shanghai|ZoneInfo\(\s*['\"]")


def test_no_module_reads_the_time_or_names_the_timezone_but_the_clock():
    offenders = []
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ("config/clock.py",) or rel.startswith("ledger/migrations/"):
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if BEHIND_THE_CLOCK.search(line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "read the time or the zone from config.clock instead:\n" + "\n".join(offenders)


# --- a counter payment across the cut-off, over a real socket -----------------------------------

@pytest.fixture
def url(db_url):
    seed(db_url, STANDARD)
    return db_url


@pytest.mark.parametrize("bank_code", BANKS)
@pytest_twisted.ensureDeferred
async def test_a_counter_payment_across_the_cutoff_takes_the_business_date_of_the_gateways_clock(url, bank_code):
    timer = Timer()                                   # the gateway's clock; its sockets stay real
    timer.advance(at_local(2026, 3, 14, 22, 59, 59).timestamp())
    gw = await start_gateway(reactor, url, clock=timer)
    bank = await connected_bank(reactor, gw, bank_code)
    try:
        before = await bank.send("0200", {**bank.payment_fields(EVE, 55_216), **times_at(gw.clock.local())})
        timer.advance(2)                              # 23:00:01: the next business date
        after = await bank.send("0200", {**bank.payment_fields(MORNING, 10_000), **times_at(gw.clock.local())})
    finally:
        await stop_all(gw, bank)
    assert (code_of(before), code_of(after)) == ("00", "00")
    assert (before.message.fields["15"], after.message.fields["15"]) == ("0314", "0315")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(payments.c.amount, payments.c.business_date)
                                .order_by(payments.c.payment_id)).all()
            received = conn.execute(select(bank_requests.c.received_at).where(bank_requests.c.mti == "0200")
                                    .order_by(bank_requests.c.id)).scalars().all()
            entry_dates = sorted(set(conn.execute(select(journal_entries.c.business_date)).scalars()))
    finally:
        engine.dispose()
    assert [(r.amount, r.business_date) for r in rows] == [(55_216, date(2026, 3, 14)), (10_000, date(2026, 3, 15))]
    received = [t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in received]
    assert received == [at_local(2026, 3, 14, 22, 59, 59), at_local(2026, 3, 14, 23, 0, 1)]   # the clock's now
    assert {date(2026, 3, 14), date(2026, 3, 15)} <= set(entry_dates)   # the payments' journal entries
    assert_ledger_verifies(url)
