"""What every caller gets back from an authentication: the ``Principal``, and ``require``.

``Forbidden`` is a ``ledger.errors.Refused`` (commands report it as every other refusal) with a
stable ``code`` for the HTTP service and the refusal counter.
"""
from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import Refused

OPERATOR, CLIENT = "operator", "client"


class AccessRefused(Refused):
    """Authentication or authorisation said no. ``code``: a stable reason (``bad_credentials``,
    ``locked``, ``session_expired``, ``forbidden``, ...); the message is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class NotAuthenticated(AccessRefused):
    """No one proved who they are (a wrong password, an expired session, an unknown key ...)."""


class Forbidden(AccessRefused):
    """Authenticated, but the principal may not do this."""


@dataclass(frozen=True)
class Principal:
    id: int
    kind: str                          # operator | client
    name: str
    display_name: str
    roles: tuple[str, ...]             # an operator's roles; () for a client
    permissions: frozenset[str]        # the roles' permissions, or the client key's scopes
    session_id: int | None = None      # the session it came with (operators)
    key_id: int | None = None          # the API key it came with (clients)

    @property
    def actor(self) -> str:
        """The audit log's actor: ``operator:alice``, ``client:billing``."""
        return f"{self.kind}:{self.name}"

    def may(self, permission: str) -> bool:
        return permission in self.permissions


def require(principal: Principal, permission: str) -> None:
    """Raise ``Forbidden`` (code ``forbidden``) unless the principal holds the permission."""
    from ledger.identity.roles import PERMISSIONS

    if permission not in PERMISSIONS:
        raise KeyError(f"no such permission {permission!r}")   # a programming error, not a refusal
    if not principal.may(permission):
        raise Forbidden("forbidden", f"{principal.actor} may not {PERMISSIONS[permission]} ({permission})")
