"""Tables of the gateway's own state, on the ledger's metadata so one migration chain covers all."""
from sqlalchemy import Column, Float, Integer, String, Table

from ledger.schema import Ts, metadata

bank_keys = Table(  # every MAC key a bank channel has been given, newest version current (docs/spec/INTERFACE.md §4.1)
    "bank_keys", metadata,
    Column("bank_code", String(11), primary_key=True),
    Column("channel", String(10), primary_key=True),      # counter | debit
    Column("version", Integer, primary_key=True),
    Column("mak_under_zmk", String(32), nullable=True),   # the MAK encrypted under the bank's ZMK; null after sign-off
    Column("previous_under_zmk", String(32), nullable=True),
    Column("replaced_at", Float, nullable=True),          # epoch seconds when `previous` stopped being current
    Column("saved_at", Ts, nullable=False),
)
