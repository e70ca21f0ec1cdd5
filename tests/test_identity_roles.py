"""The roles table: docs/access.md's table is the code's, and every role is allowed exactly what it
says and refused the rest; clients' scopes; the two approvals of a large refund."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ledger.errors import Refused
from ledger.identity import PERMISSIONS, ROLES, Forbidden, Principal, check_approval, refund_approvals_needed, require
from ledger.identity.roles import OPERATOR_ONLY, bad_scopes, permissions_of

DOC = Path(__file__).resolve().parents[1] / "docs" / "access.md"


def documented_table() -> dict[str, set[str]]:
    """role -> permissions, read from the ✓ matrix of docs/access.md."""
    lines = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| permission |")
             or re.match(r"^\| `[a-z.]+` \| .* \|$", line)]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")][2:]
    table: dict[str, set[str]] = {role: set() for role in header}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header) + 2:
            continue                                  # the commands' table, not the matrix
        for role, mark in zip(header, cells[2:]):
            if mark == "✓":
                table[role].add(cells[0].strip("`"))
    return table


def operator(*roles: str, name: str = "pat") -> Principal:
    return Principal(7, "operator", name, name.title(), tuple(roles), permissions_of(roles))


def test_the_documented_table_is_the_codes():
    assert documented_table() == {role: set(perms) for role, perms in ROLES.items()}
    assert all(p in PERMISSIONS for perms in ROLES.values() for p in perms)
    assert set().union(*ROLES.values()) == set(PERMISSIONS)     # no permission nobody holds


CASES = [(role, permission) for role in documented_table() for permission in PERMISSIONS]


@pytest.mark.parametrize("role,permission", CASES, ids=[f"{r}-{p}" for r, p in CASES])
def test_each_role_is_allowed_what_the_table_says_and_refused_the_rest(role, permission):
    who = operator(role)
    if permission in documented_table()[role]:
        require(who, permission)
    else:
        with pytest.raises(Forbidden) as caught:
            require(who, permission)
        assert caught.value.code == "forbidden" and isinstance(caught.value, Refused)
        assert permission in str(caught.value) and who.actor in str(caught.value)


def test_several_roles_hold_the_union_and_unknown_permissions_are_errors():
    both = operator("clerk", "finance")
    require(both, "refund.request")
    require(both, "statement.import")
    with pytest.raises(KeyError):
        require(both, "refund.approve")


def test_a_clients_scopes_exclude_what_needs_a_person():
    assert bad_scopes(["billing.import", "customer.read"]) == []
    assert bad_scopes(["customer.read", "refund.approve.director", "no.such"]) == ["no.such", "refund.approve.director"]
    assert all(bad_scopes([p]) == [p] for p in OPERATOR_ONLY)
    client = Principal(9, "client", "billing", "Billing", (), frozenset({"billing.import"}), key_id=3)
    assert client.actor == "client:billing"
    require(client, "billing.import")
    with pytest.raises(Forbidden):
        require(client, "customer.read")


@pytest.mark.parametrize("amount,resident,needed", [
    (99_999, True, ()), (100_000, True, ("accounting", "director")), (100_001, True, ("accounting", "director")),
    (999_999, False, ()), (1_000_000, False, ("accounting", "director")), (0, False, ()),
])
def test_refund_approvals_needed_at_the_thresholds(amount, resident, needed):
    assert refund_approvals_needed(amount, resident) == needed


def test_the_thresholds_can_be_the_configured_ones():
    assert refund_approvals_needed(50_000, True, resident_threshold_fen=50_000) == ("accounting", "director")
    assert refund_approvals_needed(50_000, False, nonresident_threshold_fen=60_000) == ()


def test_two_approvals_by_two_people_neither_the_requester():
    accounting, director = operator("accounting-approver", name="li"), operator("director-approver", name="wang")
    both = operator("accounting-approver", "director-approver", name="zhao")
    check_approval(accounting, "accounting", "operator:alice", {})
    check_approval(director, "director", "operator:alice", {"accounting": "operator:li"})

    def refused(code, *args):
        with pytest.raises(Forbidden) as caught:
            check_approval(*args)
        assert caught.value.code == code

    refused("forbidden", accounting, "director", "operator:alice", {})                       # not its level
    refused("own_request", operator("accounting-approver", name="alice"), "accounting", "operator:alice", {})
    refused("already_approved", both, "accounting", "operator:alice", {"accounting": "operator:li"})
    refused("second_approval_same_person", both, "director", "operator:alice", {"accounting": "operator:zhao"})
    with pytest.raises(ValueError):
        check_approval(accounting, "treasurer", "operator:alice", {})
