"""The API's own table: the answers to idempotent requests (migration 0010)."""
from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from ledger.schema import Ts, metadata

api_idempotency = Table(  # one row per (principal, Idempotency-Key); kept api.idempotency_hours
    "api_idempotency", metadata,
    Column("principal", String(64), primary_key=True),     # the audit actor: operator:alice, client:billing
    Column("idem_key", String(200), primary_key=True),
    Column("method", String(10), nullable=False),
    Column("path", String(300), nullable=False),
    Column("body_sha256", String(64), nullable=False),     # of the request's body (canonical JSON)
    Column("status", Integer, nullable=True),              # NULL while the first request is in hand
    Column("response_body", Text, nullable=True),
    Column("created_at", Ts, nullable=False),
    Index(None, "created_at"),
)
