"""Imports every module that declares tables on ``ledger.schema.metadata``.

Each area keeps its tables beside its code and has its own Alembic branch off ``0001``
(``ledger/migrations/versions``); ``gridpay db upgrade`` applies every branch (``heads``).
"""
import importlib

from ledger.schema import metadata

TABLE_MODULES = ("ledger.key_tables", "ledger.recon_tables", "engines.tables")

for _name in TABLE_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise

__all__ = ["metadata"]
