"""Archiving months older than the retention period (docs/ledger.md, "Archiving old months")."""
from ledger.archive.files import read_month
from ledger.archive.run import ArchiveRefused, MonthResult, archive, retention_limit

__all__ = ["ArchiveRefused", "MonthResult", "archive", "read_month", "retention_limit"]
