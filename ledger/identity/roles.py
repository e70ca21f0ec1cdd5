"""Roles and what each may do: the one table every endpoint and command is checked against.

``PERMISSIONS`` names every permission; ``ROLES`` says which an operator of each role holds (an
operator may have several roles: the union). A client (a system) holds no role: each of its API keys
carries scopes, a subset of ``PERMISSIONS`` without ``OPERATOR_ONLY`` (approvals and the management
of principals need a person). docs/access.md shows this table; tests/test_identity_roles.py checks
every role against it.
"""
from __future__ import annotations

PERMISSIONS: dict[str, str] = {
    "customer.read": "look up customers, bills, payments, prepaid balances and refunds",
    "billing.import": "import the billing system's files (customers, bills)",
    "recon.read": "see reconciliation runs and their open items",
    "recon.run": "reconcile a bank's day file",
    "recon.match": "match and resolve reconciliation items by hand",
    "correction.request": "correct a bill",
    "refund.request": "ask for a refund of a prepaid balance",
    "refund.approve.accounting": "approve or reject a large refund for the accounting centre",
    "refund.approve.director": "approve or reject a large refund as department director",
    "refund.payout": "pay approved refunds out",
    "debit.single": "send a single direct debit",
    "debit.read": "see direct-debit plans, batches and their progress",
    "plan.manage": "add, change and stop direct-debit plans",
    "batch.manage": "start, stop and retry debit batches and result files",
    "bank.manage": "banks: keys, sign-on, links",
    "notice.manage": "requeue SMS notices",
    "database.manage": "prepare the database's monthly partitions",
    "report.read": "read and export reports",
    "statement.import": "import and reconcile finance statements",
    "audit.read": "read the audit log",
    "ledger.archive": "archive months older than the retention period",
    "feed.read": "read the payment feed (the billing system's client)",
    "principal.read": "list principals, their roles and keys",
    "principal.manage": "add, disable, enable and reset principals and their API keys",
}

# Permissions a client's API key may never carry: decisions a person answers for.
OPERATOR_ONLY = frozenset({"refund.approve.accounting", "refund.approve.director", "principal.manage"})

ROLES: dict[str, frozenset[str]] = {
    "clerk": frozenset({"customer.read", "recon.read", "recon.run", "recon.match", "correction.request",
                        "refund.request"}),
    "accounting-approver": frozenset({"customer.read", "refund.approve.accounting"}),
    "director-approver": frozenset({"customer.read", "refund.approve.director"}),
    "operations": frozenset({"customer.read", "billing.import", "debit.single", "debit.read", "plan.manage",
                             "batch.manage", "bank.manage", "notice.manage", "database.manage"}),
    "finance": frozenset({"customer.read", "recon.read", "report.read", "statement.import", "refund.payout",
                          "ledger.archive"}),
    "auditor": frozenset({"customer.read", "recon.read", "report.read", "audit.read", "feed.read", "debit.read",
                          "principal.read"}),
    "administrator": frozenset({"principal.read", "principal.manage"}),
}


def permissions_of(roles) -> frozenset[str]:
    """What an operator with these roles may do."""
    out: frozenset[str] = frozenset()
    for role in roles:
        out |= ROLES[role]
    return out


def unknown_roles(roles) -> list[str]:
    return sorted(set(roles) - set(ROLES))


def bad_scopes(scopes) -> list[str]:
    """Scopes a client's key may not carry: unknown names and operator-only permissions."""
    return sorted(s for s in set(scopes) if s not in PERMISSIONS or s in OPERATOR_ONLY)


def split_names(text: str) -> tuple[str, ...]:
    """Roles or scopes as stored (space-separated) -> sorted names."""
    return tuple(sorted(text.split()))


def join_names(names) -> str:
    return " ".join(sorted(set(names)))
