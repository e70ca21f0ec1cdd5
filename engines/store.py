"""What the debit engines read and write, as plain synchronous Core statements.

Everything here runs in a worker thread (never on the reactor) inside one transaction:

- ``claim_chunks``: take chunks with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, Oracle;
  SQLite serializes writers and allows one engine), give them a lease, and in the SAME
  transaction give every pending debit of the chunk its identity (fields 7/11/37, business
  date) and the state ``sent``. Debits a dead engine left ``sent`` are never sent again: they
  become ``unknown`` and get a reversal row, in that same transaction.
- ``claim_reversals``: take over reversal rows whose owner's lease expired.
- ``renew``: the heartbeat: extends the leases of everything an engine holds.
- ``reserve_stans``: blocks of STANs from a per-bank, per-day counter under a row lock, so any
  number of engines (and ``debit now``) never reuse an identity. Every claim for the bank waits
  for that row, so a claim takes it after its reads and its takeover postings, and builds its
  0200s only once it has committed.
- ``send_again_after_a0``: the one change of a debit's identity: after the bank answered A0 it
  gets new fields 7, 11 and 37, committed before it is sent again (§4.7).

Row locks are taken in one order - a sent debit's row, then the bank's STAN row, then the
debit's reversal row (the writer: a batch's debits, then their reversals) - so that the engines'
transactions wait for one another rather than deadlock.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import Column, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from engines.tables import debit_chunks, debit_reversals, engine_instances, stan_counters
from iso8583_specs.tlv import Bill, build_tlv
from runtime.bulk_sql import in_list, insert_rows
from config.clock import SYSTEM_CLOCK, Clock
from ledger.posting import DebitResult, apply_batch
from ledger.schema import bills, debit_attempts, debit_bills, debits

OPEN_STATES = ("pending", "sent", "unknown")
TERMINAL_ID = "GPDEBIT1"
ACCEPTOR_ID = "GRIDPAY"


class StanExhausted(RuntimeError):
    """More than 999,999 STANs in one day for one bank."""


class EngineConflict(RuntimeError):
    """Another engine holds what this one needs (SQLite's single engine, or the same name)."""


# --------------------------------------------------------------------------------------------
# identities

def transmitted_of(now: datetime, clock: Clock = SYSTEM_CLOCK) -> str:
    """Field 7 of a request sent at ``now``: the business timezone's time (docs/spec/INTERFACE.md §1)."""
    return clock.local(now).strftime("%m%d%H%M%S")


def transmission_of(now: datetime, clock: Clock = SYSTEM_CLOCK) -> tuple[str, str]:
    """Field 7 of a request sent at ``now``, and the day (YYYYMMDD) of the STAN counter it draws from."""
    transmitted = transmitted_of(now, clock)
    return transmitted, clock.local(now).strftime("%Y") + transmitted[:4]


def rrn_of(debit_id: int, resend: int = 0) -> str:
    """Field 37 of a debit: its id in 11 digits after a digit counting the sends after A0
    (0 for the first send, so the RRN of a debit never refused is its id, 12 digits). Unique per
    bank per business date and beyond: two debits never share an RRN, nor two sends of one."""
    if not 0 <= resend <= 9:
        raise ValueError(f"a debit is sent again after A0 at most 9 times, not {resend}")
    return f"{resend}{debit_id % 10**11:011d}"


def reserve_stans(conn, bank_code: str, day: str, n: int) -> int:
    """The first of n consecutive STANs for (bank, day YYYYMMDD), reserved in conn's transaction."""
    if n <= 0:
        raise ValueError("n must be > 0")
    sc = stan_counters.c
    dialect = conn.dialect.name
    if dialect == "postgresql":   # one statement: the row made or locked and moved on, in one round trip
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        after = conn.execute(pg_insert(stan_counters).values(bank_code=bank_code, day=day, next_stan=1 + n)
                             .on_conflict_do_update(index_elements=[sc.bank_code, sc.day],
                                                    set_={"next_stan": sc.next_stan + n})
                             .returning(sc.next_stan)).scalar_one()
        if after - 1 > 999_999:   # raised, the transaction rolls back: nothing reserved
            raise StanExhausted(f"bank {bank_code}: no STANs left for {day} ({after - 1 - n} used)")
        return after - n
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as lite_insert
        conn.execute(lite_insert(stan_counters).values(bank_code=bank_code, day=day, next_stan=1)
                     .on_conflict_do_nothing())
    else:
        if conn.execute(select(sc.next_stan).where(sc.bank_code == bank_code, sc.day == day)).first() is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(stan_counters), {"bank_code": bank_code, "day": day, "next_stan": 1})
            except IntegrityError:
                pass
    first = conn.execute(select(sc.next_stan).where(sc.bank_code == bank_code, sc.day == day)
                         .with_for_update()).scalar_one()
    if first + n - 1 > 999_999:
        raise StanExhausted(f"bank {bank_code}: no STANs left for {day} ({first - 1} used)")
    conn.execute(update(stan_counters).where(sc.bank_code == bank_code, sc.day == day).values(next_stan=first + n))
    return first


class BlockStans:
    """``Stans`` for the link's network messages (sign-on, echo): blocks from the shared counter,
    so they never collide with debits' STANs. ``next()`` is synchronous (a short transaction per
    block of ``block`` STANs; network messages are rare)."""

    def __init__(self, db, bank_code: str, clock: Clock, block: int = 20):
        self.db, self.bank_code, self.clock, self.block = db, bank_code, clock, block
        self._day = None
        self._next = self._end = 0

    def next(self) -> str:
        day = self.clock.local().strftime("%Y%m%d")
        if day != self._day or self._next >= self._end:
            with self.db.begin() as conn:
                first = reserve_stans(conn, self.bank_code, day, self.block)
            self._day, self._next, self._end = day, first, first + self.block
        value = self._next
        self._next += 1
        return f"{value:06d}"


# --------------------------------------------------------------------------------------------
# what the engine sends

@dataclass
class SendItem:
    debit_id: int
    chunk_id: int
    bank_code: str
    fields: dict
    tries: int = 0


@dataclass
class ReverseItem:
    debit_id: int
    bank_code: str
    original: dict              # the 0200's identifying fields (enough for reversal_fields)
    transmitted: str            # the reversal's own 7/11
    stan: str
    attempts: int
    next_at: datetime
    busy: bool = False
    chunk_id: int | None = None
    fresh_identity: bool = False  # an identity the bank has not seen: its first send is a 0420


@dataclass
class Claimed:
    chunk_id: int
    batch_id: int
    chunk_no: int
    bank_code: str
    priority: int
    to_send: list[SendItem] = field(default_factory=list)
    to_reverse: list[ReverseItem] = field(default_factory=list)
    settled: int = 0            # debits already final when claimed
    # (pending row, transmitted, stan, rrn, bill items) marked sent: their 0200s are built once the
    # claim has committed, not while it holds the bank's STAN row
    unbuilt: list = field(default_factory=list, repr=False)

    def build_sends(self) -> None:
        for r, transmitted, stan, rrn, items in self.unbuilt:
            self.to_send.append(SendItem(r.debit_id, self.chunk_id, self.bank_code, debit_message_fields(
                self.bank_code, transmitted, stan, rrn, r.customer_no, r.account_no, items)))
        self.unbuilt = []


def original_fields(bank_code: str, transmitted: str, stan: str, rrn: str, amount: int, customer_no: str) -> dict:
    """The fields of a sent 0200 that its reversal refers to (docs/spec/INTERFACE.md §4.6: 90, 4, 37, 41, 42, 48 CN)."""
    return {"7": transmitted, "11": stan.zfill(6), "32": bank_code, "4": f"{int(amount):012d}",
            "37": rrn.ljust(12), "41": TERMINAL_ID.ljust(8), "42": ACCEPTOR_ID.ljust(15),
            "48": build_tlv([("CN", customer_no)])}


def bill_split(principal: int, amount: int) -> tuple[int, int]:
    """BI of a bill the debit pays ``amount`` on: (principal, penalty) still owed. Money already
    paid on a bill went to its penalty first (docs/ledger.md), so what is owed is principal first."""
    p = min(amount, max(principal, 0))
    return p, amount - p


def debit_message_fields(bank_code: str, transmitted: str, stan: str, rrn: str, customer_no: str, account_no: str,
                         bill_items: list[tuple[str, int, int]]) -> dict:
    """0200/510000 fields (§4.6); bill_items = (period, principal, penalty) still owed."""
    from engines.link import debit_fields

    return debit_fields(bank_code=bank_code, transmitted=transmitted, stan=stan, rrn=rrn, customer_no=customer_no,
                        account_no=account_no, bills=[Bill(p, a, b) for p, a, b in bill_items],
                        terminal_id=TERMINAL_ID, acceptor_id=ACCEPTOR_ID)


# --------------------------------------------------------------------------------------------
# claiming

def claim_statement(dialect_name: str, banks: list[str], now: datetime, owner: str, include_own: bool,
                    only_chunks: list[int] | None = None, limit: int = 1):
    """The chunk claim: ready chunks, and chunks whose lease expired (their engine died), highest
    priority first, skipping rows another engine has locked. Oracle cannot combine FOR UPDATE
    with a row limit: there the caller fetches ``limit`` rows (SKIP LOCKED locks rows as fetched)."""
    c = debit_chunks.c
    claimable = [c.state == "ready", and_(c.state == "claimed", c.lease_until < now)]
    if include_own:
        claimable.append(and_(c.state == "claimed", c.owner == owner))
    stmt = (select(c.chunk_id, c.batch_id, c.chunk_no, c.bank_code, c.priority, c.state, c.owner)
            .where(c.bank_code.in_(banks), or_(*claimable))
            .order_by(c.priority.desc(), c.chunk_id))
    if only_chunks is not None:
        stmt = stmt.where(c.chunk_id.in_(only_chunks))
    if dialect_name in ("postgresql", "oracle", "mysql"):
        stmt = stmt.with_for_update(skip_locked=True)
    if dialect_name != "oracle":
        stmt = stmt.limit(limit)
    return stmt


def claim_chunks(db, *, owner: str, banks: list[str], now: datetime, lease_s: float, clock: Clock,
                 limit: int = 1, include_own: bool = False, only_chunks: list[int] | None = None,
                 actor: str = "system:debit-engine") -> list[Claimed]:
    """Claim up to ``limit`` chunks and prepare them, in one transaction (see the module doc)."""
    if not banks:
        return []
    out: list[Claimed] = []
    with db.begin() as conn:
        stmt = claim_statement(conn.dialect.name, banks, now, owner, include_own, only_chunks, limit)
        result = conn.execute(stmt)
        rows = result.fetchmany(limit)
        result.close()
        if not rows:
            return []
        lease = now + timedelta(seconds=lease_s)
        c = debit_chunks.c
        for row in rows:
            conn.execute(update(debit_chunks).where(c.chunk_id == row.chunk_id).values(
                state="claimed", owner=owner, lease_until=lease, claims=c.claims + 1, updated_at=now))
            claimed = Claimed(row.chunk_id, row.batch_id, row.chunk_no, row.bank_code, row.priority)
            _prepare(conn, claimed, owner=owner, now=now, lease=lease, clock=clock, actor=actor)
            out.append(claimed)
        # the lease runs from the claim's end: on a loaded database a claim (a thousand debits'
        # identities, the bank's STAN row waited for) takes seconds, and a lease run from its start
        # was gone before the engine held the chunk and renewed it (run r12)
        ended = clock.now() + timedelta(seconds=lease_s)
        if ended > lease:
            conn.execute(update(debit_chunks).where(c.chunk_id.in_([x.chunk_id for x in out]))
                         .values(lease_until=ended))
    for claimed in out:
        claimed.build_sends()
    return out


def _chunk_debits():
    """What a claim reads of a chunk's debits: to send the pending ones, to take over the others."""
    d = debits.c
    return select(d.debit_id, d.state, d.customer_no, d.account_no, d.amount, d.transmitted, d.stan, d.rrn,
                  d.bank_code)


def _prepare(conn, claimed: Claimed, *, owner: str, now: datetime, lease: datetime, clock: Clock,
             actor: str) -> None:
    """A claimed chunk's debits: the pending ones given their identities and marked sent (their
    0200s built after the commit, ``Claimed.build_sends``), the ones an engine left sent taken over.
    Reads, then the orphans' postings, then the bank's STAN row: that row is held from the moment
    it is taken to the COMMIT, and every other claim for the bank waits for it."""
    d = debits.c
    rows = conn.execute(_chunk_debits().where(d.batch_id == claimed.batch_id, d.chunk_no == claimed.chunk_no)
                        .order_by(d.debit_id)).all()
    pending = [r for r in rows if r.state == "pending"]
    orphans = [r for r in rows if r.state in ("sent", "unknown")]
    claimed.settled = len(rows) - len(pending) - len(orphans)
    if orphans:   # a sent debit's row before the bank's STAN row (send_again_after_a0)
        orphans = _orphans_locked(conn, [r.debit_id for r in orphans])
    items = _bill_items(conn, [r.debit_id for r in pending]) if pending else {}
    if orphans:
        take_over_orphans(conn, claimed, orphans, owner=owner, now=now, lease=lease, clock=clock, actor=actor,
                          locked=True)
    if pending:
        transmitted, day = transmission_of(now, clock)
        first = reserve_stans(conn, claimed.bank_code, day, len(pending))
        claimed.unbuilt = [(r, transmitted, f"{first + i:06d}", rrn_of(r.debit_id), items[r.debit_id])
                           for i, r in enumerate(pending)]
        mark_sent(conn, [(r.debit_id, transmitted, stan, rrn) for r, _, stan, rrn, _ in claimed.unbuilt],
                  business_date=clock.business_date(now), now=now, actor=actor)


def _bill_items(conn, ids: list[int]) -> dict[int, list[tuple[str, int, int]]]:
    """(period, principal, penalty) still owed of each debit's bills, as its 0200 lists them."""
    items: dict[int, list[tuple[str, int, int]]] = {i: [] for i in ids}
    b = bills.c
    for r in conn.execute(select(debit_bills.c.debit_id, debit_bills.c.amount, b.period, b.principal)
                          .join(bills, bills.c.bill_id == debit_bills.c.bill_id)
                          .where(in_list(conn.dialect.name, debit_bills.c.debit_id, "ids"))
                          .order_by(debit_bills.c.debit_id, b.period, b.bill_id), {"ids": ids}):
        principal, penalty = bill_split(int(r.principal), int(r.amount))
        items[r.debit_id].append((r.period, principal, penalty))
    return items


def mark_sent(conn, updates: list[tuple[int, str, str, str]], *, business_date: date, now: datetime,
              actor: str) -> None:
    """Give pending debits their identity and the state ``sent`` (the bulk form of
    ``ledger.debits.mark_debit_sent``), with a ``sent`` history row each. Only pending debits
    with no identity change; anything else is a bug and aborts the transaction."""
    if not updates:
        return
    if conn.dialect.name == "postgresql":
        result = conn.exec_driver_sql(
            "UPDATE debits SET transmitted = v.t, stan = v.s, rrn = v.r, business_date = %(bd)s, state = 'sent', "
            "updated_at = %(now)s FROM (SELECT unnest(%(ids)s::bigint[]) AS id, unnest(%(ts)s::varchar[]) AS t, "
            "unnest(%(ss)s::varchar[]) AS s, unnest(%(rs)s::varchar[]) AS r) AS v "
            "WHERE debits.debit_id = v.id AND debits.state = 'pending' AND debits.transmitted IS NULL",
            {"bd": business_date, "now": now, "ids": [u[0] for u in updates], "ts": [u[1] for u in updates],
             "ss": [u[2] for u in updates], "rs": [u[3] for u in updates]})
        changed = result.rowcount
    else:
        d = debits.c
        result = conn.execute(
            update(debits).where(d.debit_id == bindparam("b_id"), d.state == "pending", d.transmitted.is_(None))
            .values(transmitted=bindparam("b_t"), stan=bindparam("b_s"), rrn=bindparam("b_r"),
                    business_date=business_date, state="sent", updated_at=now),
            [{"b_id": i, "b_t": t, "b_s": s, "b_r": r} for i, t, s, r in updates])
        changed = result.rowcount
    if changed != len(updates):
        raise RuntimeError(f"marking {len(updates)} debits sent changed {changed}: another writer moved them")
    insert_rows(conn, debit_attempts, [{"debit_id": i, "event": "sent", "mti": "0200", "response_code": None,
                                        "detail": f"identity {t}/{s}/{r}", "actor": actor, "at": now}
                                       for i, t, s, r in updates])


def send_again_after_a0(db, item: SendItem, *, now: datetime, clock: Clock,
                        actor: str = "system:debit-engine") -> dict:
    """The fields of a debit the bank answered A0, under a new identity, committed before it is
    written (§4.7: new 7 and 11 - and a new 37, docs/debit-engines.md): a STAN from the shared
    counter, field 7 = ``now``, the RRN's resend digit one up (``rrn_of``); ``ledger.debits.mark_debit_sent``
    records both identities. A retry after a commit whose answer was lost finds the new identity
    already there and returns it (only the engine holding the chunk resends its debits)."""
    from ledger.debits import mark_debit_sent

    f = item.fields
    old = (f["7"], f["11"], f["37"].strip())
    d = debits.c
    with db.begin() as conn:
        # the debit's row before the bank's STAN row, as every path that holds a sent debit takes
        # them (a takeover, a refused reversal): the other order could deadlock with a takeover of
        # this debit, and held the bank's STAN row - every claim for the bank - while it waited
        row = conn.execute(select(d.transmitted, d.stan, d.rrn, d.state)
                           .where(d.debit_id == item.debit_id).with_for_update()).one()
        current = (row.transmitted, row.stan, row.rrn)
        if current != old and row.state == "sent" and row.transmitted != old[0]:
            transmitted, stan, rrn = current
        else:
            transmitted, day = transmission_of(now, clock)
            stan = f"{reserve_stans(conn, item.bank_code, day, 1):06d}"
            refused = conn.execute(select(func.count()).select_from(debit_attempts).where(
                debit_attempts.c.debit_id == item.debit_id, debit_attempts.c.event == "mac_refused")).scalar_one()
            rrn = rrn_of(item.debit_id, refused + 1)
            mark_debit_sent(conn, item.debit_id, transmitted=transmitted, stan=stan, rrn=rrn,
                            business_date=clock.business_date(now), at=now, actor=actor, after_a0=old)
    return {**f, "7": transmitted, "12": transmitted[4:], "13": transmitted[:4], "11": stan, "37": rrn.ljust(12)}


NOTHING_APPLIED = ("A0", "91", "96")   # §6: the bank applied nothing; its answer to that identity is kept (§4.7)


def reversal_again_after_refusal(db, item: ReverseItem, code: str, *, now: datetime, clock: Clock,
                                 actor: str = "system:debit-engine") -> tuple[str, str]:
    """A reversal the bank answered without applying it (``NOTHING_APPLIED``): a new identity
    (7, 11) for the next 0420, committed before it is written, with a ``reversal_refused`` row
    naming both (§4.7, as a debit after A0). Returns (transmitted, stan). A retry after a commit
    whose answer was lost finds the new identity already there and returns it."""
    r = debit_reversals.c
    old = (item.transmitted, item.stan)
    with db.begin() as conn:
        # the debit's row first, as the writer takes them (a batch's debits, then their reversals);
        # the other order - the reversal's row, then the debit's through its history row's foreign
        # key - deadlocked with the writer posting the same debit
        conn.execute(select(debits.c.debit_id).where(debits.c.debit_id == item.debit_id)
                     .with_for_update(key_share=True))
        row = conn.execute(select(r.transmitted, r.stan).where(r.debit_id == item.debit_id)).one()
        if (row.transmitted, row.stan) != old:
            return row.transmitted, row.stan
        transmitted, day = transmission_of(now, clock)
        stan = f"{reserve_stans(conn, item.bank_code, day, 1):06d}"
        conn.execute(update(debit_reversals).where(r.debit_id == item.debit_id)
                     .values(transmitted=transmitted, stan=stan, updated_at=now))
        insert_rows(conn, debit_attempts, [{
            "debit_id": item.debit_id, "event": "reversal_refused", "mti": "0430", "response_code": code,
            "detail": f"nothing applied under {old[0]}/{old[1]}: the 0420 again as {transmitted}/{stan}",
            "actor": actor, "at": now}])
    return transmitted, stan


def take_over_orphans(conn, claimed: Claimed | None, rows, *, owner: str, now: datetime, lease: datetime,
                      clock: Clock, actor: str, detail: str = "", locked: bool = False) -> list[ReverseItem]:
    """Debits left ``sent``/``unknown`` by an engine that is gone: they may have reached the bank,
    so they are never sent again. Each becomes ``unknown`` and gets a reversal (a new row, or the
    existing one taken over). ``rows`` are read again under their locks unless ``locked`` says
    they were (``_orphans_locked``)."""
    r = debit_reversals.c
    if not locked:
        rows = _orphans_locked(conn, [row.debit_id for row in rows])
    if not rows:
        return []
    ids = [row.debit_id for row in rows]
    existing = {x.debit_id: x for x in conn.execute(
        select(debit_reversals).where(in_list(conn.dialect.name, r.debit_id, "ids")), {"ids": ids})}
    new_rows = [row for row in rows if row.debit_id not in existing]
    out: list[ReverseItem] = []
    if new_rows:
        postings = [DebitResult(row.debit_id, "unknown", now, detail=detail or "left unanswered by an engine that "
                                "stopped: reversing", actor=actor) for row in new_rows if row.state == "sent"]
        if postings:
            outcomes = apply_batch(conn, postings, clock, now)
            bad = [(p.debit_id, o.response_code, o.detail) for p, o in zip(postings, outcomes)
                   if not (o.ok or o.replayed)]
            if bad:
                raise RuntimeError(f"the ledger refused unknown for {bad[:3]}")
        out += create_reversals(conn, [(row.debit_id, row.bank_code, original_fields(
            row.bank_code, row.transmitted, row.stan, row.rrn, row.amount, row.customer_no)) for row in new_rows],
            owner=owner, now=now, lease=lease, clock=clock)
    taken = [x for x in existing.values() if x.state == "pending"]
    if taken:
        conn.execute(update(debit_reversals).where(in_list(conn.dialect.name, r.debit_id, "ids"))
                     .values(owner=owner, lease_until=lease, updated_at=now), {"ids": [x.debit_id for x in taken]})
        by_id = {row.debit_id: row for row in rows}
        for x in taken:
            row = by_id[x.debit_id]
            out.append(ReverseItem(x.debit_id, x.bank_code, original_fields(
                row.bank_code, row.transmitted, row.stan, row.rrn, row.amount, row.customer_no),
                x.transmitted, x.stan, x.attempts, _aware(x.next_at)))
    if claimed is not None:
        for item in out:
            item.chunk_id = claimed.chunk_id
        claimed.to_reverse += out
    return out


def _orphans_locked(conn, ids: list[int]) -> list:
    """The orphans read again under their row locks (PostgreSQL, Oracle; in key order). Until
    then the engine that held them may still change them: give one a new identity after an A0
    (``send_again_after_a0``, which sends it under that identity once committed) or settle it. A
    reversal made from the rows as first read named the refused identity; the bank answered it 00,
    having nothing under it, and kept the debit it applied under the new one (run r16). Locked,
    a debit is read as last committed, and the old owner's send after A0 is refused from then on
    (the debit is no longer ``sent``)."""
    d = debits.c
    stmt = (_chunk_debits().where(in_list(conn.dialect.name, d.debit_id, "ids")).order_by(d.debit_id)
            .with_for_update())
    return [row for row in conn.execute(stmt, {"ids": sorted(ids)}) if row.state in ("sent", "unknown")]


def create_reversals(conn, items: list[tuple[int, str, dict]], *, owner: str, now: datetime, lease: datetime,
                     clock: Clock) -> list[ReverseItem]:
    """Reversal rows (state pending, due now) with their own identity, for (debit_id, bank, original)."""
    if not items:
        return []
    transmitted, day = transmission_of(now, clock)
    by_bank: dict[str, list] = {}
    for it in items:
        by_bank.setdefault(it[1], []).append(it)
    out: list[ReverseItem] = []
    rows = []
    for bank, group in by_bank.items():
        first = reserve_stans(conn, bank, day, len(group))
        for i, (debit_id, _, original) in enumerate(group):
            stan = f"{first + i:06d}"
            rows.append({"debit_id": debit_id, "bank_code": bank, "transmitted": transmitted, "stan": stan,
                         "state": "pending", "attempts": 0, "next_at": now, "response_code": None, "owner": owner,
                         "lease_until": lease, "created_at": now, "updated_at": now})
            out.append(ReverseItem(debit_id, bank, original, transmitted, stan, 0, now))
    insert_rows(conn, debit_reversals, rows)
    return out


def claim_reversals(db, *, owner: str, banks: list[str], now: datetime, lease_s: float, include_own: bool = False,
                    limit: int = 500, only_debits: list[int] | None = None) -> list[ReverseItem]:
    """Take over pending reversals whose owner's lease expired (or, at start, our own)."""
    if not banks:
        return []
    r, d = debit_reversals.c, debits.c
    lease = now + timedelta(seconds=lease_s)
    with db.begin() as conn:
        cond = [r.owner.is_(None), r.lease_until < now]
        if include_own:
            cond.append(r.owner == owner)
        stmt = (select(r.debit_id).where(r.state == "pending", r.bank_code.in_(banks), or_(*cond))
                .order_by(r.next_at))
        if only_debits is not None:
            stmt = stmt.where(r.debit_id.in_(only_debits))
        if conn.dialect.name in ("postgresql", "oracle"):
            stmt = stmt.with_for_update(skip_locked=True)
        if conn.dialect.name != "oracle":
            stmt = stmt.limit(limit)
        result = conn.execute(stmt)
        ids = [row.debit_id for row in result.fetchmany(limit)]
        result.close()
        if not ids:
            return []
        conn.execute(update(debit_reversals).where(r.debit_id.in_(ids)).values(owner=owner, lease_until=lease,
                                                                               updated_at=now))
        rows = conn.execute(select(debit_reversals, d.transmitted.label("o_t"), d.stan.label("o_s"),
                                   d.rrn.label("o_r"), d.amount, d.customer_no)
                            .join(debits, debits.c.debit_id == r.debit_id).where(r.debit_id.in_(ids))).all()
    return [ReverseItem(x.debit_id, x.bank_code, original_fields(x.bank_code, x.o_t, x.o_s, x.o_r, x.amount,
                                                                 x.customer_no),
                        x.transmitted, x.stan, x.attempts, _aware(x.next_at)) for x in rows]


def _aware(ts: datetime) -> datetime:
    from datetime import timezone
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------------
# leases and instances

def renew(db, *, owner: str, now: datetime, lease_s: float, chunk_ids: set[int] = frozenset(),
          reversal_ids: set[int] = frozenset()) -> tuple[set[int], set[int]]:
    """Extend the leases of the chunks and reversals this process holds (``chunk_ids``,
    ``reversal_ids``) and its instance row; returns those it still holds (a lost one was taken
    over by another engine). Only what the process holds in memory is renewed: rows left under
    the same name by a process that died must expire, so that they are taken over and recovered."""
    lease = now + timedelta(seconds=lease_s)
    c, r, e = debit_chunks.c, debit_reversals.c, engine_instances.c
    chunks: set[int] = set()
    revs: set[int] = set()
    # Two transactions, the chunks' (and the heartbeat) first.
    with db.begin() as conn:
        if chunk_ids:
            chunks = _renew_rows(conn, c.chunk_id, and_(c.owner == owner, c.state == "claimed"), chunk_ids, lease)
        conn.execute(update(engine_instances).where(e.name == owner).values(heartbeat_at=now, lease_until=lease))
    if reversal_ids:
        with db.begin() as conn:
            revs = _renew_rows(conn, r.debit_id, and_(r.owner == owner, r.state == "pending"), reversal_ids, lease)
    return chunks, revs


def _renew_rows(conn, key: Column, mine, ids: set[int], lease: datetime) -> set[int]:
    """Move the lease of the rows of ``key``'s table among ``ids`` that are still ``mine`` to
    ``lease``; returns those still mine. The writer updates these rows too (a chunk's 'done'; a
    reversal's attempts and answer), several in one transaction, so on PostgreSQL a row it has
    locked is skipped - renewed the next second, and still counted as held - rather than waited
    for, or deadlocked with (runs r11 and r18), failing the renewal. The ids go as one array on
    PostgreSQL: an engine may hold thousands of reversals, and rendering an IN list of 5,000 took
    0.1 s of CPU a second (10 ms as an array)."""
    mine = and_(in_list(conn.dialect.name, key, "held"), mine)
    held = {"held": sorted(ids)}
    target = mine
    if conn.dialect.name == "postgresql":
        target = key.in_(select(key).where(mine).with_for_update(skip_locked=True))
    conn.execute(update(key.table).where(target).values(lease_until=lease), held)
    return set(conn.execute(select(key).where(mine), held).scalars())


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell: trust the lease
    if pid <= 0:
        return True  # not a process id: cannot tell, trust the lease
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return True  # cannot tell: trust the lease
    return True


def register_instance(db, *, name: str, banks: list[str], now: datetime, lease_s: float,
                      single: bool = False) -> None:
    """Record a running engine. Refused (``EngineConflict``) when a live instance has the same
    name, or - with ``single`` (SQLite) - when any other live engine exists. An instance whose
    lease has expired, or whose process on this host is gone (kill -9), is replaced."""
    e = engine_instances.c
    host, pid = socket.gethostname(), os.getpid()
    lease = now + timedelta(seconds=lease_s)
    with db.begin() as conn:  # SQLite: BEGIN IMMEDIATE makes this check-and-insert atomic
        rows = conn.execute(select(engine_instances).with_for_update()).all() if conn.dialect.name != "sqlite" \
            else conn.execute(select(engine_instances)).all()
        for row in rows:
            live = _aware(row.lease_until) > now and _alive(row.host, row.pid)
            if not live:
                continue
            if row.name == name:
                raise EngineConflict(f"an engine named {name!r} is running (pid {row.pid} on {row.host})")
            if single:
                raise EngineConflict(f"engine {row.name!r} (pid {row.pid} on {row.host}) is running on this SQLite "
                                     f"database; SQLite allows one engine at a time")
        conn.execute(engine_instances.delete().where(e.name == name))
        conn.execute(insert(engine_instances), {"name": name, "host": host, "pid": pid, "banks": ",".join(banks),
                                                "started_at": now, "heartbeat_at": now, "lease_until": lease})


def unregister_instance(db, name: str, now: datetime) -> None:
    """A clean stop: give up the instance and every lease at once, so others take over now."""
    c, r, e = debit_chunks.c, debit_reversals.c, engine_instances.c
    with db.begin() as conn:
        conn.execute(update(debit_chunks).where(c.owner == name, c.state == "claimed").values(lease_until=now))
        conn.execute(update(debit_reversals).where(r.owner == name, r.state == "pending").values(lease_until=now))
        conn.execute(engine_instances.delete().where(e.name == name))


def live_engines(db, now: datetime, bank_code: str | None = None) -> list[str]:
    e = engine_instances.c
    with db.connect() as conn:
        rows = conn.execute(select(e.name, e.banks, e.lease_until, e.host, e.pid)).all()
    return [r.name for r in rows if _aware(r.lease_until) > now and _alive(r.host, r.pid)
            and (bank_code is None or bank_code in r.banks.split(","))
            and not r.name.startswith("debit-now:")]


def chunk_progress(conn, batch_id: int) -> dict:
    c = debit_chunks.c
    return dict(conn.execute(select(c.state, func.count()).where(c.batch_id == batch_id).group_by(c.state)).all())


__all__ = ["BlockStans", "Claimed", "EngineConflict", "ReverseItem", "SendItem", "StanExhausted", "claim_chunks",
           "claim_reversals", "claim_statement", "create_reversals", "live_engines", "mark_sent",
           "register_instance", "renew", "reserve_stans", "reversal_again_after_refusal", "send_again_after_a0",
           "unregister_instance", "rrn_of",
           "transmitted_of", "original_fields"]
