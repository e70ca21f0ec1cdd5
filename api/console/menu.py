"""The console's pages in the menu, each with the permissions that open it (any one of them; none:
every signed-in operator). An operator's menu shows only what their roles allow; a page's routes
are guarded by the same permissions (``viewer.page``), so a hidden page is also a refused one."""
from __future__ import annotations

from dataclasses import dataclass

from ledger.identity import Principal
from ledger.identity.approvals import PERMISSION as APPROVAL_PERMISSION


@dataclass(frozen=True)
class MenuItem:
    key: str                          # its label is the catalogue's "menu.<key>"
    path: str
    permissions: tuple[str, ...]      # any one opens it; () every signed-in operator
    accesskey: str                    # documented in docs/console.md and on the home page

    def open_to(self, principal: Principal) -> bool:
        return not self.permissions or any(principal.may(p) for p in self.permissions)


MENU: tuple[MenuItem, ...] = (
    MenuItem("home", "/console/", (), "h"),
    MenuItem("approvals", "/console/approvals", tuple(APPROVAL_PERMISSION.values()), "a"),
    MenuItem("customers", "/console/customers", ("customer.read",), "c"),
    # the day at a glance, debit plans and batches, reports (issue 20)
    MenuItem("glance", "/console/glance", ("debit.read", "report.read"), "g"),
    MenuItem("plans", "/console/plans", ("debit.read",), "p"),
    MenuItem("reports", "/console/reports", ("report.read",), "f"),
    # the reconciliation workbench (api/console/recon.py, recon_items.py)
    MenuItem("recon", "/console/recon", ("recon.read",), "w"),
)
ITEMS = {item.key: item for item in MENU}


def menu_for(principal: Principal) -> list[MenuItem]:
    return [item for item in MENU if item.open_to(principal)]
