"""Who changes principals and keys: the authenticated administrator, audited with the OS login of the
command that did it (``os_login``) beside it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.audit import audit_row, write_audit
from ledger.identity.principal import Principal, require


@dataclass(frozen=True)
class ChangedBy:
    actor: str                   # operator:alice (the bootstrap: the first administrator itself)
    os_login: str = ""           # getpass.getuser() of the command; "" from the HTTP service
    source: str = ""             # the HTTP service: the client's address

    @classmethod
    def administrator(cls, principal: Principal, os_login: str = "", source: str = "") -> "ChangedBy":
        """``principal`` may manage principals (``Forbidden`` otherwise)."""
        require(principal, "principal.manage")
        return cls(principal.actor, os_login, source)

    def audit(self, conn, now: datetime, action: str, object_type: str, object_id, reason: str = "",
              **details) -> None:
        extra = {k: v for k, v in (("os_login", self.os_login), ("source", self.source)) if v}
        write_audit(conn, [audit_row(now, self.actor, action, object_type, object_id, reason, **extra, **details)])
