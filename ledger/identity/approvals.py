"""The two approvals a large refund needs: the accounting centre's and the department director's,
by two different people, neither of them the one who asked.

A resident's refund from ``resident_threshold_fen`` (1,000 yuan) on, a non-resident's from
``nonresident_threshold_fen`` (10,000 yuan) on, needs both (``business.refund_approval_*`` are the
configured thresholds); a smaller one needs none.
"""
from __future__ import annotations

from ledger.identity.principal import Forbidden, Principal, require

ACCOUNTING, DIRECTOR = "accounting", "director"
LEVELS = (ACCOUNTING, DIRECTOR)
PERMISSION = {ACCOUNTING: "refund.approve.accounting", DIRECTOR: "refund.approve.director"}


def refund_approvals_needed(amount_fen: int, resident: bool, resident_threshold_fen: int = 100_000,
                            nonresident_threshold_fen: int = 1_000_000) -> tuple[str, ...]:
    """The approval levels a refund of ``amount_fen`` needs: both, or none."""
    threshold = resident_threshold_fen if resident else nonresident_threshold_fen
    return LEVELS if amount_fen >= threshold else ()


def check_approval(approver: Principal, level: str, requested_by: str, given: dict[str, str]) -> None:
    """May ``approver`` give the ``level`` approval of a refund ``requested_by`` (an actor string)
    asked for, ``given`` being the approvals so far (level -> approver's actor)? ``Forbidden`` with
    its code if not."""
    if level not in PERMISSION:
        raise ValueError(f"no approval level {level!r}")
    require(approver, PERMISSION[level])
    if approver.actor == requested_by:
        raise Forbidden("own_request", "the operator who asked for a refund cannot approve it")
    if level in given:
        raise Forbidden("already_approved", f"the {level} approval was given already (by {given[level]})")
    if approver.actor in given.values():
        raise Forbidden("second_approval_same_person", "the two approvals must come from two different people")
