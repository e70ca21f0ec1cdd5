"""Reconciliation runs and items page by page, newest run first and items by id (the HTTP
service's lists; ``api/pagination.py`` reads one more row than a page to know there is a next), and what
the console's workbench shows beside them: open items per run, the bank runs already made."""
from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from ledger.recon_tables import recon_items, recon_runs

ITEM_STATUSES = ("open", "matched", "resolved")


def run_page(conn, before: int | None, limit: int) -> list[dict]:
    """Runs, newest first, with run id below ``before``."""
    query = select(recon_runs).order_by(recon_runs.c.run_id.desc()).limit(limit)
    if before is not None:
        query = query.where(recon_runs.c.run_id < before)
    return [dict(r) for r in conn.execute(query).mappings()]


def item_page(conn, *, status: str | None, bank: str | None, after: int | None, limit: int) -> list[dict]:
    """Items of one status (or all) and one bank (or all), by item id, after ``after``."""
    ri = recon_items.c
    query = select(recon_items).order_by(ri.item_id).limit(limit)
    if status:
        query = query.where(ri.status == status)
    if bank:
        query = query.where(ri.bank_code == bank)
    if after is not None:
        query = query.where(ri.item_id > after)
    return [dict(r) for r in conn.execute(query).mappings()]


def open_counts(conn, run_ids: list[int]) -> dict[int, int]:
    """How many items of each run are still open (runs without open items are left out)."""
    if not run_ids:
        return {}
    ri = recon_items.c
    query = (select(ri.run_id, func.count()).where(ri.run_id.in_(run_ids), ri.status == "open")
             .group_by(ri.run_id))
    return {run_id: int(n) for run_id, n in conn.execute(query)}


def bank_runs_of(conn, days: list[tuple[str, date]]) -> dict[tuple[str, date], int]:
    """The bank run already made for each (bank, business date) there is one for."""
    if not days:
        return {}
    rr = recon_runs.c
    query = select(rr.bank_code, rr.business_date, rr.run_id).where(
        rr.kind == "bank", rr.bank_code.in_(sorted({bank for bank, _ in days})),
        rr.business_date.in_(sorted({day for _, day in days})))
    return {(bank, day): run_id for bank, day, run_id in conn.execute(query) if (bank, day) in set(days)}
