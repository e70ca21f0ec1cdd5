"""The day at a glance, read in ONE snapshot (ledger.customer_view.snapshot: REPEATABLE READ on
PostgreSQL), each figure from a query that an index answers at 4.3 M customers (docs/console.md
lists the plans):

- each configured bank's channels: signed on (the newest ``bank_keys`` row, as ``gridpay status``
  reads it), the engines whose lease covers the bank, the debits in flight (``debits.state = sent``:
  index on state) and the last answer (today's newest payment at that bank on that channel:
  index on business_date, bank_code);
- today's collections by channel (ledger.finance_reports' rows of the business date);
- debits of unknown outcome and reversals unanswered or refused (index on state);
- open reconciliation items by age (index on status, bank_code, business_date);
- the outbox backlog (engines.notifier.outbox_stats);
- batches running (a chunk not done, or a file batch waiting) with their progress
  (engines.batch_progress.batch_progress).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import case, func, select

from api.json_types import as_utc
from engines.batch_progress import batch_progress
from engines.notifier import OutboxStats, outbox_stats
from engines.tables import debit_chunks, debit_reversals, engine_batches, engine_instances
from ledger.customer_view import snapshot
from ledger.finance_reports import DailyReport, DailyRow, collection_rows_in
from ledger.key_store_db import newest_keys
from ledger.recon_tables import recon_items
from ledger.reports.context import CHANNELS, label_of
from ledger.reports.definition import say
from ledger.schema import debits, payments

# open reconciliation items by age: (label key, at least this many days old)
AGE_BANDS = (("age.day", 0), ("age.days3", 1), ("age.week", 3), ("age.older", 7))
RUNNING_BATCHES_SHOWN = 20
PAYMENT_CHANNEL = {"counter": "C", "debit": "D"}


@dataclass
class Link:
    bank_code: str
    channel: str            # counter | debit
    mode: str               # online | file (debit channel)
    signed_on: bool
    signed_at: datetime | None
    engines: list[str]
    in_flight: int
    last_answer_at: datetime | None


@dataclass
class Glance:
    at: datetime
    business_date: date
    links: list[Link]
    collections: list[DailyRow]            # by channel (bank and method left blank)
    unknown_debits: int
    reversals_waiting: dict[str, int]          # unanswered | refused (debit still unknown) | pending
    recon_by_age: list[tuple[str, int]]
    outbox: OutboxStats
    batches: list[dict] = field(default_factory=list)

    @property
    def collected_total(self) -> DailyRow:
        return DailyReport(self.business_date, self.collections).total


def links(conn, settings, now: datetime, today: date) -> list[Link]:
    keys = newest_keys(conn)
    e = engine_instances.c
    serving = [(r.name, r.banks.split(",")) for r in conn.execute(select(e.name, e.banks, e.lease_until))
               if as_utc(r.lease_until) > now and not r.name.startswith("debit-now:")]
    in_flight = dict(conn.execute(select(debits.c.bank_code, func.count()).where(debits.c.state == "sent")
                                  .group_by(debits.c.bank_code)).all())
    p = payments.c
    last = {(b, ch): t for b, ch, t in conn.execute(select(p.bank_code, p.channel, func.max(p.created_at))
                                                    .where(p.business_date == today)
                                                    .group_by(p.bank_code, p.channel))}
    out = []
    for code, bank in settings.banks.items():
        for channel in bank.channels:
            key = keys.get((code, channel))
            out.append(Link(code, channel, bank.debit.mode if channel == "debit" else "online",
                            key is not None and key.mak_under_zmk is not None, key.saved_at if key else None,
                            [name for name, banks in serving if code in banks] if channel == "debit" else [],
                            in_flight.get(code, 0) if channel == "debit" else 0,
                            last.get((code, PAYMENT_CHANNEL.get(channel, "")))))
    return out


def channel_name(code: str) -> str:
    """A payment channel as the glance names it (the reports' label, in English: counter, direct debit)."""
    return say(label_of(CHANNELS, code), "en")


def collections(conn, today: date) -> list[DailyRow]:
    """Today's collections by channel: ledger.finance_reports' rows (by bank, channel, method) summed."""
    rows = collection_rows_in(conn, today, today)
    by_channel = []
    for name in sorted({channel_name(r.channel) for r in rows}):
        total = DailyReport(today, [r for r in rows if channel_name(r.channel) == name]).total
        total.channel = name
        by_channel.append(total)
    return by_channel


def waiting_debits(conn) -> tuple[int, dict[str, int]]:
    """(debits of unknown outcome, their reversals by state: pending, unanswered, refused)."""
    d, r = debits.c, debit_reversals.c
    unknown = conn.execute(select(func.count()).where(d.state == "unknown")).scalar_one()
    reversals = dict(conn.execute(select(r.state, func.count()).join(debits, d.debit_id == r.debit_id)
                                  .where(r.state.in_(["pending", "unanswered", "refused"]), d.state == "unknown")
                                  .group_by(r.state)).all())
    return int(unknown), {state: int(reversals.get(state, 0)) for state in ("pending", "unanswered", "refused")}


def recon_by_age(conn, now: datetime) -> list[tuple[str, int]]:
    i = recon_items.c
    naive = conn.dialect.name == "sqlite"         # SQLite keeps naive UTC

    def since(days: int):
        at = now - timedelta(days=days)
        return at.replace(tzinfo=None) if naive else at

    band = case(*[(i.created_at > since(AGE_BANDS[n + 1][1]), n) for n in range(len(AGE_BANDS) - 1)],
                else_=len(AGE_BANDS) - 1)
    counts = dict(conn.execute(select(band, func.count()).where(i.status == "open").group_by(band)).all())
    return [(key, int(counts.get(n, 0))) for n, (key, _) in enumerate(AGE_BANDS)]


def running_batches(conn) -> list[dict]:
    """Online batches with a chunk not done and file batches waiting, newest first, with their progress."""
    c, eb = debit_chunks.c, engine_batches.c
    ids = set(conn.execute(select(c.batch_id).where(c.state.in_(["ready", "claimed"])).distinct()).scalars())
    ids |= set(conn.execute(select(eb.batch_id).where(eb.state.in_(["new", "written"]))).scalars())
    return [batch_progress(conn, batch_id) for batch_id in sorted(ids, reverse=True)[:RUNNING_BATCHES_SHOWN]]


def glance(engine, settings, clock) -> Glance:
    now = clock.now()
    today = clock.business_date(now)
    with snapshot(engine) as conn:
        unknown, reversals = waiting_debits(conn)
        return Glance(now, today, links(conn, settings, now, today), collections(conn, today), unknown, reversals,
                      recon_by_age(conn, now), outbox_stats(conn, now), running_batches(conn))
