"""Reconciliation: bank transaction files (docs/spec/INTERFACE.md §7.1), finance statements (§7.3), manual matching,
resolutions through the ledger, reports, and the drop-directory watcher. See docs/reconciliation.md.

Public API (import from the submodules; names re-exported lazily here):
- ``reconcile_bank_file(engine, path, actor=...)`` (matching)
- ``reconcile_statement(engine, path, actor=..., rules=FinanceRules())`` (finance)
- ``resolve_item(engine, item_id, action, actor=..., reason=...)`` (resolutions)
- ``open_items``, ``show_item``, ``match_items``, ``unmatch`` (manual; ``match_items_in``, ``unmatch_in``
  and ``resolve_item_in`` in the caller's transaction, for the HTTP service)
- ``run_page``, ``item_page`` (lists: runs and items page by page)
- ``day_report``, ``write_day_reports`` (day_reports), ``write_run_reports`` (run_reports), ``ReportsDir``,
  ``ReportOptions`` (report_labels: language, clock, bank names); the reports are documents of the one
  report model (``ledger.reports``), served by its catalogue as ``recon-day`` and ``recon-run``
- ``DropWatcher``, ``poll_forever``, ``register_handler`` (watch)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "reconcile_bank_file": "matching", "BankRunResult": "matching",
    "read_bank_file": "bank_file", "BankFile": "bank_file",
    "reconcile_statement": "finance", "FinanceRules": "finance", "FinanceRunResult": "finance",
    "read_statement": "camt", "StatementError": "camt",
    "resolve_item": "resolutions", "Refused": "ledger_ops",
    "open_items": "manual", "show_item": "manual", "match_items": "manual", "unmatch": "manual",
    "day_report": "day_reports", "write_run_reports": "run_reports", "write_day_reports": "day_reports",
    "ReportsDir": "report_labels", "ReportOptions": "report_labels",
    "DropWatcher": "watch", "poll_forever": "watch", "register_handler": "watch",
    "validate_debit_result": "debit_files",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"ledger.recon.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
