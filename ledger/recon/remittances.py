"""A bank's remittance clears its clearing account: which statement credits are a bank's money,
and keeping the journal in step with that (docs/reconciliation.md, "What a remittance posts").

A finance statement's credit (a reconciliation item, direction C, not a reversal) is *attributed*
to a bank:
- when it is in a live match with a bank's reconciliation run (automatic: its reference names the
  run and the amount agrees within the tolerance; or by hand, ``gridpay recon match ITEM --run N``):
  that run's bank;
- else when it *claims* a bank run (``remits_run_id``, set when the statement is stored: its
  reference named the run, which was there, not matched, and the credit came to less than what
  remained of it: partly matched, ``ledger_amount`` holds that remainder): the bank its reference
  names. What arrived is posted; the clearing account keeps the difference, and the item stays
  open for it.

What a bank run's remittances took of it (``remitted_of_runs``) is its claims plus what its live
match took (the run member's amount: the remainder it expected); a later credit for the run is
compared with what remains, so the run's remittances together never take more than it expects.

``settle_remittance`` makes the journal say exactly that for an item: the credit's amount moved
out of its bank's clearing account into the collection account (``Remittance``), or nothing; what
was posted and is no longer attributed gets its red reversal (``RemittanceReversal``: an unmatch).
Running it again changes nothing. ``ledger verify`` checks every item the same way.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, exists, func, select

from config.clock import SYSTEM_CLOCK, Clock
from ledger.errors import Refused
from ledger.posting import Remittance, RemittanceReversal, post_one, remitted_of
from ledger.recon.resolutions import load_item
from ledger.recon_tables import recon_items, recon_match_members, recon_matches, recon_runs

ri, rr, m = recon_items.c, recon_runs.c, recon_matches.c
item_member, run_member = recon_match_members.alias("item_member"), recon_match_members.alias("run_member")
CREDIT = and_(ri.direction == "C", ri.reversal == "N")


def _matched_to_runs():
    """(item_id, bank_code, amount) of credits in live matches with a bank run."""
    return (select(ri.item_id, rr.bank_code, ri.bank_amount)
            .select_from(item_member
                         .join(recon_matches, and_(m.match_id == item_member.c.match_id, m.undone_at.is_(None)))
                         .join(run_member, and_(run_member.c.match_id == m.match_id, run_member.c.run_id.is_not(None)))
                         .join(recon_runs, rr.run_id == run_member.c.run_id)
                         .join(recon_items, ri.item_id == item_member.c.item_id))
            .where(CREDIT).distinct())


def _claims():
    """The remittances that claim their run and are in no live match with a bank run (partly matched)."""
    in_match = exists().where(item_member.c.item_id == ri.item_id, item_member.c.match_id == m.match_id,
                              m.undone_at.is_(None), run_member.c.match_id == m.match_id,
                              run_member.c.run_id.is_not(None))
    return and_(CREDIT, ri.kind == "remittance", ri.remits_run_id.is_not(None), ~in_match)


def _partly_matched():
    """(item_id, bank_code, amount) of the remittances that claim their run, not matched since."""
    return select(ri.item_id, ri.bank_code, ri.bank_amount).where(_claims())


def remitted_of_runs(conn, run_ids=None, *, besides=()) -> dict[int, int]:
    """run_id -> fen its remittances took of it: the credits claiming it (but ``besides``) plus what
    its live matches took (their run member's amount); for ``run_ids``, or every such run."""
    mm = recon_match_members.c
    claims = (select(ri.remits_run_id, func.sum(ri.bank_amount)).where(_claims())
              .group_by(ri.remits_run_id))
    taken = (select(mm.run_id, func.sum(mm.amount))
             .select_from(recon_match_members.join(recon_matches, and_(m.match_id == mm.match_id,
                                                                       m.undone_at.is_(None))))
             .where(mm.run_id.is_not(None)).group_by(mm.run_id))
    if besides:
        claims = claims.where(ri.item_id.not_in(list(besides)))
    if run_ids is not None:
        claims, taken = claims.where(ri.remits_run_id.in_(list(run_ids))), taken.where(mm.run_id.in_(list(run_ids)))
    out: dict[int, int] = {}
    for query in (claims, taken):
        for run_id, fen in conn.execute(query):
            out[int(run_id)] = out.get(int(run_id), 0) + int(fen)
    return out


def attributed(conn, item_id: int | None = None) -> dict[int, dict[str, int]]:
    """item_id -> {bank code: fen} of the credits attributed to a bank (one item, or all)."""
    out: dict[int, dict[str, int]] = {}
    for query in (_matched_to_runs(), _partly_matched()):
        if item_id is not None:
            query = query.where(ri.item_id == item_id)
        for item, bank, amount in conn.execute(query):
            out.setdefault(int(item), {})[bank] = int(amount)
    return out


def settle_remittance(conn, item_id: int, *, actor: str, now: datetime | None = None, reason: str = "",
                      clock: Clock = SYSTEM_CLOCK) -> dict[str, int]:
    """Post or reverse what the journal lacks for one statement credit (the item locked first).
    Returns what is attributed now; ``Refused`` for a credit matched to runs of several banks."""
    now = now or clock.now()
    item = load_item(conn, item_id, lock=True)
    should = attributed(conn, item_id).get(item_id, {})
    if len(should) > 1:
        raise Refused(f"item {item_id} would be remitted by banks {', '.join(sorted(should))}: "
                      f"match a credit to one bank's runs")
    for bank, amount in remitted_of(conn, item_id).items():
        if should.get(bank) != amount:
            _post(conn, RemittanceReversal(item_id, bank, amount, actor, reason or "no longer attributed"), clock, now)
    posted = remitted_of(conn, item_id)
    for bank, amount in should.items():
        if bank not in posted:
            _post(conn, Remittance(item_id, bank, amount, item["business_date"], actor, reason), clock, now)
    return should


def _post(conn, posting, clock: Clock, now: datetime) -> None:
    outcome = post_one(conn, posting, clock, now)
    if not outcome.ok:
        raise Refused(outcome.detail)
