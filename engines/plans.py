"""Debit plans and the batches they make.

A plan names a bank, which customers (an active agreement with that bank; unpaid bills due on or
before the run date + ``due_days``; optionally one district, ``customers.district`` as customers.csv
gives it, or a list of customers) and when (a cron expression, evaluated in ``time_zone``).
``build_batch`` turns a plan and a scheduled time into one ``debit_batches`` row with its pending
debits, in chunks, in ONE transaction: the unique (plan_id, scheduled_for) makes a second
scheduler's attempt fail whole, so a run is made once.

Who is left out, and why (``debit_skips``): a customer whose total due exceeds the agreement's
debit limit (the bank would answer 61; the gateway does not ask), or who is suspended or closed.
Bills already in a debit whose outcome is open (pending, sent, unknown) are not debited again.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, text, update

from engines.tables import debit_chunks, debit_plans, debit_skips, engine_batches
from ledger.audit import audit_row
from config.clock import DEFAULT_TIMEZONE, SYSTEM_CLOCK, Clock
from ledger.ids import reserve_ids_for_bulk
from ledger.posting import DEBIT_ACTOR, open_bills_query
from ledger.schema import agreements, audit_log, customers, debit_attempts, debit_batches, debit_bills, debits
from runtime.bulk_sql import generic_plans, in_list, insert_rows

OPEN_STATES = ("pending", "sent", "unknown")
_DISTRICT = re.compile(r"[A-Za-z0-9]{1,20}")   # as customers.csv gives it (docs/spec/BILLING-FILES.md)
SINGLE_PRIORITY = 100


class PlanError(ValueError):
    pass


@dataclass
class BatchSummary:
    batch_id: int
    plan_id: int | None
    scheduled_for: datetime | None
    bank_code: str
    mode: str
    debits: int = 0
    total: int = 0
    chunks: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)   # (customer, amount, reason)
    debit_ids: list[int] = field(default_factory=list)


# --- plans -------------------------------------------------------------------------------------

def validate_cron(expr: str) -> None:
    from croniter import croniter

    if not croniter.is_valid(expr):
        raise PlanError(f"not a cron expression: {expr!r}")


def add_plan(db, *, name: str, bank_code: str, cron: str, now: datetime, actor: str, due_days: int = 0,
             district: str | None = None, customers_only: list[str] | None = None, chunk_size: int = 1000,
             time_zone: str = DEFAULT_TIMEZONE, paused: bool = False) -> int:
    with db.begin() as conn:
        return add_plan_in(conn, name=name, bank_code=bank_code, cron=cron, now=now, actor=actor, due_days=due_days,
                           district=district, customers_only=customers_only, chunk_size=chunk_size,
                           time_zone=time_zone, paused=paused)


def add_plan_in(conn, *, name: str, bank_code: str, cron: str, now: datetime, actor: str, due_days: int = 0,
                district: str | None = None, customers_only: list[str] | None = None, chunk_size: int = 1000,
                time_zone: str = DEFAULT_TIMEZONE, paused: bool = False) -> int:
    """``add_plan`` in the caller's transaction (the HTTP service stores its answer in it)."""
    validate_cron(cron)
    ZoneInfo(time_zone)
    if district is not None and not _DISTRICT.fullmatch(district):
        raise PlanError(f"district {district!r} is not 1-20 ASCII letters or digits, as customers.csv names "
                        f"districts: no customer could be in it")
    if not 1 <= chunk_size <= 100_000:
        raise PlanError("chunk size must be 1..100000")
    plan_id = conn.execute(insert(debit_plans).returning(debit_plans.c.plan_id), {
        "name": name, "bank_code": bank_code, "cron": cron, "time_zone": time_zone, "due_days": due_days,
        "district": district, "customers": ",".join(customers_only) if customers_only else None,
        "chunk_size": chunk_size, "status": "P" if paused else "A", "last_run_for": None, "created_by": actor,
        "created_at": now, "updated_at": now}).scalar_one()
    conn.execute(insert(audit_log), audit_row(now, actor, "plan.add", "debit_plan", plan_id, name=name,
                                              bank=bank_code, cron=cron, due_days=due_days, district=district))
    return plan_id


def get_plan(conn, name_or_id) -> dict:
    p = debit_plans.c
    cond = p.plan_id == int(name_or_id) if str(name_or_id).isdigit() else p.name == str(name_or_id)
    row = conn.execute(select(debit_plans).where(cond)).mappings().first()
    if row is None:
        raise PlanError(f"no plan {name_or_id!r}")
    return dict(row)


def list_plans(db) -> list[dict]:
    with db.connect() as conn:
        return [dict(r) for r in conn.execute(select(debit_plans).order_by(debit_plans.c.plan_id)).mappings()]


def set_status(db, name_or_id, status: str, *, now: datetime, actor: str) -> dict:
    """Pause (P) or resume (A). Resuming starts from now: runs that fell in the pause are not made."""
    with db.begin() as conn:
        return set_status_in(conn, name_or_id, status, now=now, actor=actor)


def set_status_in(conn, name_or_id, status: str, *, now: datetime, actor: str) -> dict:
    """``set_status`` in the caller's transaction (the HTTP service stores its answer in it)."""
    plan = get_plan(conn, name_or_id)
    values = {"status": status, "updated_at": now}
    if status == "A" and plan["status"] == "P":
        values["last_run_for"] = now
    conn.execute(update(debit_plans).where(debit_plans.c.plan_id == plan["plan_id"]).values(**values))
    conn.execute(insert(audit_log), audit_row(now, actor, "plan.resume" if status == "A" else "plan.pause",
                                              "debit_plan", plan["plan_id"]))
    plan.update(values)
    return plan


# --- batches -----------------------------------------------------------------------------------

def _bank_mode(settings, bank_code: str) -> str:
    if settings is None or bank_code not in settings.banks:
        return "online"
    return settings.banks[bank_code].debit.mode


@functools.cache
def _debitable_bills_query(dialect_name: str):
    """The customers' open bills that no debit with an open outcome holds: each bill asks the
    debit_bills index, so the read does not grow with the other banks' batches."""
    owed = open_bills_query(dialect_name).subquery("owed")
    held = (select(debit_bills.c.bill_id).join(debits, debits.c.debit_id == debit_bills.c.debit_id)
            .where(debit_bills.c.bill_id == owed.c.bill_id, debits.c.state.in_(OPEN_STATES)))
    return select(owed).where(~held.exists())


def build_batch(conn, *, bank_code: str, at: datetime, clock: Clock, mode: str = "online",
                plan: dict | None = None, scheduled_for: datetime | None = None, due_days: int | None = None,
                district: str | None = None, customers_only: list[str] | None = None, chunk_size: int = 1000,
                priority: int = 0, kind: str = "plan", actor: str = DEBIT_ACTOR,
                include_not_due: bool = False, channel: str = "batch") -> BatchSummary:
    """Create a batch, its debits and chunks (or, in file mode, no chunks) in conn's transaction.
    Raises IntegrityError when (plan_id, scheduled_for) already has a batch."""
    if plan is not None:
        due_days = plan["due_days"]
        district = plan["district"]
        customers_only = plan["customers"].split(",") if plan["customers"] else None
        chunk_size = plan["chunk_size"]
    dialect = conn.dialect.name
    if dialect == "postgresql":  # one batch builder per bank at a time: no bill lands in two debits
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": 0x6470_0000_0000 + int(bank_code)})
    batch_id = conn.execute(insert(debit_batches).returning(debit_batches.c.batch_id), {
        "plan_id": plan["plan_id"] if plan else None, "scheduled_for": scheduled_for, "bank_code": bank_code,
        "mode": mode, "created_at": at}).scalar_one()
    summary = BatchSummary(batch_id, plan["plan_id"] if plan else None, scheduled_for, bank_code, mode)
    run_date = clock.business_date(scheduled_for or at)
    due_by = run_date + timedelta(days=due_days or 0)

    a, c = agreements.c, customers.c
    q = (select(a.customer_no, a.account_no, a.debit_limit, c.status)
         .join(customers, customers.c.customer_no == a.customer_no)
         .where(a.bank_code == bank_code, a.status == "A"))
    if district:
        q = q.where(c.district == district)
    if customers_only:
        q = q.where(in_list(dialect, a.customer_no, "only"))
    cands = {r.customer_no: r for r in conn.execute(q, {"only": customers_only} if customers_only else {})}
    bills_of: dict[str, list] = {}
    if cands:
        for r in conn.execute(_debitable_bills_query(dialect), {"custs": sorted(cands)}):
            if not include_not_due and r.due_date > due_by:
                continue
            owing = int(r.principal) + int(r.penalty) - int(r.allocated)
            if owing > 0:
                bills_of.setdefault(r.customer_no, []).append((r.period, r.due_date, r.bill_id, owing))
    chosen = []
    for customer_no in sorted(bills_of):
        cand = cands[customer_no]
        items = sorted(bills_of[customer_no])
        amount = sum(i[3] for i in items)
        if cand.status != "A":
            summary.skipped.append((customer_no, amount, f"customer is {'suspended' if cand.status == 'S' else 'closed'}"))
        elif cand.debit_limit and amount > int(cand.debit_limit):
            summary.skipped.append((customer_no, amount, f"total due {amount} fen exceeds the agreement's debit limit "
                                                         f"{int(cand.debit_limit)} fen (the bank would answer 61)"))
        else:
            chosen.append((customer_no, cand.account_no, [(i[2], i[3]) for i in items], amount))
    ids = reserve_ids_for_bulk(conn, debits, len(chosen))
    debit_rows, bill_rows, hist_rows, audit_rows = [], [], [], []
    for n, ((customer_no, account_no, items, amount), debit_id) in enumerate(zip(chosen, ids)):
        chunk_no = n // chunk_size
        debit_rows.append({"debit_id": debit_id, "batch_id": batch_id, "chunk_no": chunk_no, "bank_code": bank_code,
                           "customer_no": customer_no, "account_no": account_no, "amount": amount,
                           "transmitted": None, "stan": None, "rrn": None, "business_date": None, "state": "pending",
                           "response_code": None, "approval_code": None, "created_at": at, "updated_at": at,
                           "channel": channel})
        bill_rows += [{"debit_id": debit_id, "bill_id": b, "amount": amt} for b, amt in items]
        hist_rows.append({"debit_id": debit_id, "event": "created", "mti": None, "response_code": None,
                          "detail": f"batch {batch_id}", "actor": actor, "at": at})
        audit_rows.append(audit_row(at, actor, "debit.create", "debit", debit_id, customer_no=customer_no,
                                    amount=amount, bills=[b for b, _ in items], batch=batch_id,
                                    channel=channel))
        summary.total += amount
    summary.debits = len(chosen)
    summary.debit_ids = list(ids)
    chunks = (len(chosen) + chunk_size - 1) // chunk_size
    summary.chunks = chunks if mode == "online" else 0
    with generic_plans(conn):   # each row's foreign-key checks: planned once, not once a row
        insert_rows(conn, debits, debit_rows)
        insert_rows(conn, debit_bills, bill_rows)
        insert_rows(conn, debit_attempts, hist_rows)
        insert_rows(conn, audit_log, audit_rows)
        if mode == "online" and chunks:
            insert_rows(conn, debit_chunks, [{
                "batch_id": batch_id, "chunk_no": k, "bank_code": bank_code, "priority": priority, "state": "ready",
                "debit_count": min(chunk_size, len(chosen) - k * chunk_size), "owner": None, "lease_until": None,
                "claims": 0, "created_at": at, "updated_at": at} for k in range(chunks)])
        insert_rows(conn, debit_skips, [{"batch_id": batch_id, "customer_no": cust, "amount": amt, "reason": why,
                                         "created_at": at} for cust, amt, why in summary.skipped])
    state = ("ready" if chosen else "done") if mode == "online" else ("new" if chosen else "done")
    conn.execute(insert(engine_batches), {
        "batch_id": batch_id, "state": state, "kind": kind, "debit_count": len(chosen), "debit_sum": summary.total,
        "skipped_count": len(summary.skipped), "chunk_count": summary.chunks, "created_by": actor, "created_at": at,
        "updated_at": at})
    conn.execute(insert(audit_log), audit_row(at, actor, "debit.batch", "debit_batch", batch_id,
                                              plan=summary.plan_id, scheduled_for=scheduled_for, debits=len(chosen),
                                              total=summary.total, skipped=len(summary.skipped), mode=mode))
    return summary


def run_now(db, settings, name_or_id, *, now: datetime, actor: str, clock: Clock = SYSTEM_CLOCK
            ) -> BatchSummary:
    """A batch of the plan at once (scheduled_for = now, to the second); the cron schedule is unchanged."""
    with db.begin() as conn:
        return run_now_in(conn, settings, name_or_id, now=now, actor=actor, clock=clock)


def run_now_in(conn, settings, name_or_id, *, now: datetime, actor: str, clock: Clock = SYSTEM_CLOCK
               ) -> BatchSummary:
    """``run_now`` in the caller's transaction (the HTTP service stores its answer in it)."""
    plan = get_plan(conn, name_or_id)
    return build_batch(conn, bank_code=plan["bank_code"], at=now, clock=clock, plan=plan,
                       scheduled_for=now.replace(microsecond=0), mode=_bank_mode(settings, plan["bank_code"]),
                       actor=actor)
