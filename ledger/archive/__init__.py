"""Archiving months older than the retention period (docs/ledger.md, "Archiving old months").

The archive's names are loaded on first use: verify and the billing feed read
``ledger.archive.openings`` while the posting package is still being imported, and the archive
itself reads reconciliation, which imports posting.
"""
from importlib import import_module

_WHERE = {"ArchiveRefused": "run", "MonthResult": "run", "archive": "run", "retention_limit": "run",
          "read_month": "files"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'ledger.archive' has no attribute {name!r}")
    return getattr(import_module(f"ledger.archive.{_WHERE[name]}"), name)
