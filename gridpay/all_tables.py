"""Imports every module that declares tables on ``ledger.schema.metadata``: the migration env and
``gridpay db`` see every area's tables; no area below the command loads another by name.

Each area keeps its tables beside its code and has its own Alembic branch off ``0001``
(``ledger/migrations/versions``); ``gridpay db upgrade`` applies every branch (``heads``).
"""
import api.tables  # noqa: F401 - the operations API's idempotency keys
import engines.tables  # noqa: F401 - the debit engines' and the scheduler's tables
import ledger.identity.tables  # noqa: F401 - principals, API keys, sessions
import ledger.key_tables  # noqa: F401 - the banks' MAC keys (counter and debit channels)
import ledger.billing_feed.tables  # noqa: F401 - the billing system's payment feed
import ledger.recon_tables  # noqa: F401 - reconciliation
import ledger.archive.tables  # noqa: F401 - what archived months carry forward
from ledger.schema import metadata

__all__ = ["metadata"]
