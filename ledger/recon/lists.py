"""Reconciliation runs and items page by page, newest run first and items by id (the HTTP
service's lists; ``api/pagination.py`` reads one more row than a page to know there is a next)."""
from __future__ import annotations

from sqlalchemy import select

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
