"""A deterministic demo data set: customers, bills and debit agreements as the billing system's
CSV files (docs/spec/BILLING-FILES.md), for ``gridpay demo`` and for tests.

The same (customers, seed, as_of) always gives the same files. Customers have Chinese names, about
two thirds a mobile number; about one in ten is a non-resident (a company); one is suspended; each
has 1 to 3 bills over the three months before ``as_of``; about one in eight has a direct-debit
agreement with bank 01020000.

The files are of billing files 1.1: customers.csv has the optional columns ``district`` (most
customers in one of five districts, some in none) and ``collection_type`` (mostly empty, which
is D with an agreement and C without; some C, some B), bills.csv has ``category`` (mostly E or
empty, a few V and F). Those values come from a random stream of their own, so the required
columns are what they were before 1.1; ``optional=False`` gives the rows without them (1.0).
"""
from __future__ import annotations

import contextlib
import csv
import random
from datetime import date
from pathlib import Path
from typing import Callable, Iterator

from config.clock import SYSTEM_CLOCK
from ledger.imports import HEADERS, OPTIONAL, SET_FILE_NAMES

DEMO_BANK = "01020000"
DISTRICTS = ("TIANHE", "YUEXIU", "HAIZHU", "BAIYUN", "PANYU")

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰文斌浩宇子涵欣怡梓轩思远晓东海燕春梅"
_COMPANY_PLACES = ["广州", "佛山", "东莞", "深圳", "珠海", "中山"]
_COMPANY_WORDS = ["华南", "宏达", "兴业", "恒通", "瑞丰", "金穗", "南粤", "天河", "珠江", "信达"]
_COMPANY_KINDS = ["贸易有限公司", "实业有限公司", "物业管理有限公司", "电子科技有限公司", "餐饮管理有限公司"]


def _periods(as_of: date, count: int) -> list[str]:
    out, year, month = [], as_of.year, as_of.month
    for _ in range(count):
        month -= 1
        if month == 0:
            year, month = year - 1, 12
        out.append(f"{year:04d}{month:02d}")
    return sorted(out)


def _due(period: str) -> date:
    year, month = int(period[:4]), int(period[4:]) + 1
    if month == 13:
        year, month = year + 1, 1
    return date(year, month, 20)


def demo_header(kind: str, optional: bool = True) -> tuple[str, ...]:
    """The header of a demo file: with the optional columns of billing files 1.1, or without."""
    return (*HEADERS[kind], *OPTIONAL[kind]) if optional else HEADERS[kind]


def iter_demo_rows(customers: int = 200, seed: int = 1, as_of: date | None = None,
                   bills: int | None = None, optional: bool = False) -> Iterator[tuple[str, list[str]]]:
    """The demo set's rows as (kind, row), one customer at a time (nothing is kept: a set of any
    size streams). ``bills``, when given, spreads exactly that many bills evenly over the
    customers (one each for as many bills as customers) instead of 1 to 3 each. ``optional``:
    customers and bills rows carry the optional columns (``demo_header``)."""
    rng = random.Random(seed)
    extra = random.Random(f"billing files 1.1, seed {seed}")   # keeps ``rng``'s draws as they were
    as_of = as_of or SYSTEM_CLOCK.business_date()
    most = 3 if bills is None or not customers else max(3, -(-bills // customers))
    periods = _periods(as_of, most)
    dues = {period: _due(period).isoformat() for period in periods}
    suspended = customers // 2
    for i in range(customers):
        customer_no = f"0140{580000 + i:06d}"
        resident = rng.random() >= 0.1
        if resident:
            name = rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))
        else:
            name = rng.choice(_COMPANY_PLACES) + "市" + rng.choice(_COMPANY_WORDS) + rng.choice(_COMPANY_KINDS)
        mobile = f"1{rng.choice('3578')}{rng.randrange(10 ** 9):09d}" if rng.random() < 0.67 else ""
        status = "S" if i == suspended else "A"
        row = [customer_no, name, "R" if resident else "N", status, "Y" if resident or rng.random() < 0.5 else "N",
               mobile]
        if optional:
            draw = extra.random()
            row += [extra.choice(DISTRICTS) if draw < 0.9 else "", "C" if draw < 0.1 else "B" if draw < 0.2 else ""]
        yield "customers", row
        if bills is None:
            count = rng.randint(1, 3)
        else:
            count = (i + 1) * bills // customers - i * bills // customers
        for period in periods[len(periods) - count:] if count else ():
            principal = rng.randrange(3_000, 60_000) if resident else rng.randrange(50_000, 2_000_000)
            penalty = rng.randrange(100, 2_000) if period == periods[0] and rng.random() < 0.3 else 0
            row = [customer_no, period, f"{period}{customer_no}", str(principal), str(penalty), dues[period]]
            if optional:
                draw = extra.random()
                row.append("V" if draw < 0.03 else "F" if draw < 0.04 else "E" if draw < 0.5 else "")
            yield "bills", row
        if rng.random() < 0.125:
            account = "6222" + f"{rng.randrange(10 ** 15):015d}"
            limit = rng.choice(("0", "0", "50000", "200000"))
            yield "agreements", [customer_no, DEMO_BANK, account, name, "A", limit]


def demo_rows(customers: int = 200, seed: int = 1, as_of: date | None = None,
              optional: bool = False) -> dict[str, list[list[str]]]:
    """The rows (without header: ``demo_header``) of each file of the demo set."""
    rows: dict[str, list[list[str]]] = {kind: [] for kind in HEADERS}
    for kind, row in iter_demo_rows(customers, seed, as_of, optional=optional):
        rows[kind].append(row)
    return rows


def write_demo_files(directory: str | Path, customers: int = 200, seed: int = 1,
                     as_of: date | None = None, bills: int | None = None, optional: bool = True) -> dict[str, Path]:
    """Write customers.csv, bills.csv and agreements.csv into ``directory``, a row at a time (a
    million customers take no more memory than ten); returns {kind: path}. ``bills``, ``optional``
    (default: the 1.1 columns): see ``iter_demo_rows``."""
    return write_rows(directory, iter_demo_rows(customers, seed, as_of, bills, optional), optional)


def write_rows(directory: str | Path, rows: Iterator[tuple[str, list[str]]], optional: bool = True,
               other: Callable[[str, list[str]], None] | None = None) -> dict[str, Path]:
    """Stream (kind, row) pairs into the set's files in ``directory``; returns {kind: path}. Rows
    of a kind that is not a billing file go to ``other`` (the caller's own lists)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {kind: directory / SET_FILE_NAMES[kind] for kind in HEADERS}
    with contextlib.ExitStack() as stack:
        writers = {}
        for kind, path in out.items():
            fh = stack.enter_context(open(path, "w", encoding="utf-8", newline="", buffering=1 << 20))
            writers[kind] = csv.writer(fh, lineterminator="\r\n")
            writers[kind].writerow(demo_header(kind, optional))
        for kind, row in rows:
            if kind in writers:
                writers[kind].writerow(row)
            elif other is not None:
                other(kind, row)
    return out


def install_demo(engine, directory: str | Path, actor: str = "system:demo", customers: int = 200, seed: int = 1,
                 as_of: date | None = None):
    """Write the demo files and import them as one set; returns {kind: ImportResult}."""
    from ledger.imports import import_files

    return import_files(engine, write_demo_files(directory, customers, seed, as_of), actor)


# --- the utility at full size (scripts/bench/fullscale.py) -----------------------------------------

UTILITY_BANKS = ("01020000", "01030000", "01040000", "01050000", "03010000", "03020000", "03030000", "03050000",
                 "03080000", "03090000", "04030000")
UTILITY_DISTRICTS = (*DISTRICTS, "LIWAN", "HUANGPU", "HUADU", "NANSHA", "CONGHUA", "ZENGCHENG", "LUOGANG")
_CATEGORIES = (("E", 0.80), ("V", 0.90), ("F", 0.95), ("", 1.0))   # cumulative shares: mixed categories


def utility_customer_no(i: int) -> str:
    return f"02{i:08d}"


def iter_utility_rows(customers: int, seed: int, as_of: date, *, agreement_share: float = 0.3,
                      mobile_share: float = 0.6, debits_due: int = 0, counter: int = 0,
                      banks: tuple[str, ...] = UTILITY_BANKS, districts: tuple[str, ...] = UTILITY_DISTRICTS
                      ) -> Iterator[tuple[str, list[str]]]:
    """A utility's month as the billing system's files (1.1 columns), one customer at a time:
    ``customers`` customers spread over ``districts`` and ``banks``, ``agreement_share`` of them
    with a debit agreement, ``mobile_share`` with a mobile number, one bill each for the month
    before ``as_of`` (mixed categories). The first ``debits_due`` customers with an agreement have
    their bill due on ``as_of`` and no debit limit (a plan of due_days 0 run that day takes exactly
    them); every other bill falls due later in the month. Besides the files' rows it yields
    ("debit_account", [bank, account, customer]) for each of those ``debits_due``, and
    ("counter", [bank, customer]) for ``counter`` customers without an agreement (they pay at the
    banks' counters: disjoint from the debits), spread over the whole base and over the banks.
    Deterministic by (customers, seed, as_of, the shares and counts)."""
    rng = random.Random(f"utility {seed}")
    period = _periods(as_of, 1)[0]
    no_agreement = max(1.0, customers * (1 - agreement_share))
    counter_share = min(1.0, 1.1 * counter / no_agreement)
    due, counters = 0, 0
    for i in range(customers):
        customer_no = utility_customer_no(i)
        resident = rng.random() >= 0.05
        if resident:
            name = rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))
        else:
            name = rng.choice(_COMPANY_PLACES) + "市" + rng.choice(_COMPANY_WORDS) + rng.choice(_COMPANY_KINDS)
        mobile = f"1{rng.choice('3578')}{rng.randrange(10 ** 9):09d}" if rng.random() < mobile_share else ""
        bank = banks[i % len(banks)]
        agreement = rng.random() < agreement_share
        yield "customers", [customer_no, name, "R" if resident else "N", "A", "Y" if resident else "N", mobile,
                            districts[rng.randrange(len(districts))], "D" if agreement else "C"]
        principal = rng.randrange(3_000, 60_000) if resident else rng.randrange(50_000, 2_000_000)
        draw = rng.random()
        category = next(c for c, share in _CATEGORIES if draw < share)
        due_today = agreement and due < debits_due
        due_date = as_of if due_today else date.fromordinal(as_of.toordinal() + 1 + i % 27)
        yield "bills", [customer_no, period, f"{period}{customer_no}", str(principal), "0", due_date.isoformat(),
                        category]
        if agreement:
            account = f"62{bank[:4]}{i:013d}"
            limit = "0" if due_today else rng.choice(("0", "0", "300000"))
            yield "agreements", [customer_no, bank, account, name, "A", limit]
            if due_today:
                due += 1
                yield "debit_account", [bank, account, customer_no]
        elif counters < counter and rng.random() < counter_share:
            counters += 1
            yield "counter", [banks[counters % len(banks)], customer_no]
