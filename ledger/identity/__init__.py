"""Identities and roles: who may use the operations API and the back-office commands (docs/access.md).

Module map (each file one job):

- ``tables``: principals, api_keys, sessions (migration 0008);
- ``roles``: every permission and which roles hold it;
- ``principal``: ``Principal`` (what callers get back), ``require``, ``Forbidden``, ``NotAuthenticated``;
- ``passwords``: Argon2id hashes and the password policy; ``totp``: the second factor;
- ``tokens``: API keys and session tokens, shown once, stored as hashes;
- ``login``: log-in and lock-out; ``sessions``: session expiry and log-out; ``keys``: API keys;
- ``refusals``: every refusal audited, logged and counted; ``authorize``;
- ``changes``: who changes principals (audited); ``admin``: managing principals;
- ``approvals``: the two approvals a large refund needs;
- ``store``: reading principals.
"""
from ledger.identity.admin import (
    PrincipalInfo, add_client, add_first_admin, add_operator, list_principals, reset, set_disabled, set_roles, show,
)
from ledger.identity.approvals import check_approval, refund_approvals_needed
from ledger.identity.changes import ChangedBy
from ledger.identity.keys import KeyInfo, add_key, authenticate_api_key, list_keys, revoke_key
from ledger.identity.login import login
from ledger.identity.principal import AccessRefused, Forbidden, NotAuthenticated, Principal, require
from ledger.identity.refusals import AuthMetrics, authorize
from ledger.identity.roles import PERMISSIONS, ROLES
from ledger.identity.sessions import Session, authenticate_session, logout

__all__ = [
    "PrincipalInfo", "add_client", "add_first_admin", "add_operator", "list_principals", "reset", "set_disabled",
    "set_roles", "show", "check_approval", "refund_approvals_needed", "ChangedBy", "KeyInfo", "add_key",
    "authenticate_api_key", "list_keys", "revoke_key", "login", "AccessRefused", "Forbidden", "NotAuthenticated",
    "Principal", "require", "AuthMetrics", "authorize", "PERMISSIONS", "ROLES", "Session", "authenticate_session",
    "logout",
]
