"""Resolving an open reconciliation item, each through the ledger's own operations and audited.

``resolve_item(engine, item_id, action, actor=..., reason=...)``, one transaction each:

- ``post`` (补账): a bank-only counter line with status S: the payment is posted with source 'R'
  on the file's business date when the customer and amount check out (``ledger_ops.post_bank_payment``);
- ``reverse``: the ledger's payment of a ledger-only item, or of a status_differs item the bank
  shows reversed (or an amount_differs item), gets a red reversal (``ledger_ops.reverse_payment``);
- ``settle``: a debit_unknown item: the debit gets the outcome the bank's file shows (S approved
  and its bills paid; R reversed; absent declined: bills stay unpaid) (``ledger_ops.settle_debit``);
- ``accept``: any open item: the difference is accepted as it is, with the reason as the note.

The item becomes ``resolved`` with its resolution, who and when; an ``audit_log`` row
(``recon.resolve``) names the operator, the reason and what the ledger did.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select, update

from ledger.audit import audit_row, write_audit
from config.clock import SYSTEM_CLOCK, Clock
from ledger.errors import Refused
from ledger.recon.ledger_ops import post_bank_payment, reverse_payment, settle_debit
from ledger.recon_tables import recon_items

ACTIONS = ("post", "reverse", "settle", "accept")
RESOLUTION = {"post": "posted", "reverse": "reversed", "settle": "settled", "accept": "accepted"}


def load_item(conn, item_id: int, lock: bool = False) -> dict:
    stmt = select(recon_items).where(recon_items.c.item_id == item_id)
    if lock:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise Refused(f"no reconciliation item {item_id}")
    return dict(row)


def resolve_item(engine: Engine, item_id: int, action: str, *, actor: str, reason: str,
                 method: str = "01", cheque_no: str | None = None, now: datetime | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> dict:
    """Resolve one open item (see the module docstring). Raises ``Refused`` with the reason when the
    action does not fit the item or the ledger refuses it; nothing is changed then."""
    with engine.begin() as conn:
        return resolve_item_in(conn, item_id, action, actor=actor, reason=reason, method=method, cheque_no=cheque_no,
                               now=now, clock=clock)


def resolve_item_in(conn, item_id: int, action: str, *, actor: str, reason: str,
                    method: str = "01", cheque_no: str | None = None, now: datetime | None = None,
                    clock: Clock = SYSTEM_CLOCK) -> dict:
    """``resolve_item`` in the caller's transaction (the HTTP service stores its answer in it)."""
    if action not in ACTIONS:
        raise Refused(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    if not actor or not actor.strip():
        raise Refused("a resolution names the operator (actor)")
    if not reason or not reason.strip():
        raise Refused("a resolution needs a reason")
    now = now or clock.now()
    item = load_item(conn, item_id, lock=True)
    if item["status"] != "open":
        raise Refused(f"item {item_id} is {item['status']}" + (f" ({item['resolution']} by {item['resolved_by']})"
                                                              if item["resolution"] else ""))
    kind = item["kind"]
    done: dict = {}
    changes: dict = {}
    if action == "post":
        if kind != "bank_only" or item["channel"] != "C" or item["bank_status"] != "S":
            raise Refused(f"only a bank-only counter line with status S can be posted (this is {kind}, "
                          f"channel {item['channel']}, status {item['bank_status']})")
        payment_id, receipt = post_bank_payment(
            conn, bank_code=item["bank_code"], business_date=item["business_date"], transmitted=item["transmitted"],
            stan=item["stan"], rrn=item["rrn"], customer_no=item["customer_no"], amount=int(item["bank_amount"]),
            actor=actor, now=now, reason=reason, method=method, cheque_no=cheque_no, terminal_id=item["terminal"],
            clock=clock)
        done = {"payment_id": payment_id, "receipt_no": receipt}
        changes = {"payment_id": payment_id, "ledger_amount": int(item["bank_amount"]), "ledger_status": "S"}
    elif action == "reverse":
        ok = (item["payment_id"] is not None and item["ledger_status"] == "S"
              and (kind == "ledger_only" or kind == "amount_differs"
                   or (kind == "status_differs" and item["bank_status"] == "R")))
        if not ok:
            raise Refused(f"only the ledger's payment of a ledger-only item, of an amount difference, or of a "
                          f"status difference the bank shows reversed can be reversed (this is {kind}, ledger "
                          f"status {item['ledger_status']})")
        reversal_id = reverse_payment(conn, item["payment_id"], actor=actor, now=now, clock=clock,
                                      reason=f"reconciliation item {item_id}: {reason}")
        done = {"reversal_id": reversal_id, "payment_id": item["payment_id"]}
        changes = {"ledger_status": "R"}
    elif action == "settle":
        if kind != "debit_unknown" or item["debit_id"] is None:
            raise Refused(f"only a debit with an unknown outcome can be settled (this is {kind})")
        if item["bank_status"] == "S" and item["bank_amount"] is not None and int(item["bank_amount"]) != int(item["ledger_amount"]):
            raise Refused(f"the bank's amount {item['bank_amount']} differs from the debit's {item['ledger_amount']}: "
                          f"accept it with a note instead")
        done = settle_debit(conn, item["debit_id"], item["bank_status"], actor=actor, now=now, clock=clock,
                            reason=f"reconciliation item {item_id}: {reason}")
        done["debit_id"] = item["debit_id"]
        changes = {"ledger_status": {"approved": "S", "reversed": "R", "declined": None}[done["result"]]}
    conn.execute(update(recon_items).where(recon_items.c.item_id == item_id).values(
        status="resolved", resolution=RESOLUTION[action], resolved_by=actor, resolved_at=now, note=reason[:200],
        **changes))
    write_audit(conn, [audit_row(now, actor, "recon.resolve", "recon_item", item_id, reason=reason, step=action,
                                 kind=kind, run_id=item["run_id"], **done)])
    return {"item_id": item_id, "action": action, "resolution": RESOLUTION[action], **done}
