"""Identity's tables (declared on ``ledger.schema.metadata``; migration 0008).

- ``principals``: who may act: operators (people, who log in with a password and, when enrolled, a
  TOTP code) and clients (systems, which present an API key). Roles are an operator's; a client's
  permissions are its keys' scopes. The password is an Argon2id hash; the TOTP secret is encrypted
  when ``[access]`` has a key (``totp.seal``) and never shown after enrolment (``totp_last_step``: the newest 30-second step whose code was accepted, so a code
  is used once). ``failed_logins`` and ``locked_until`` are the lock-out.
- ``api_keys``: a client's keys: ``prefix`` finds the row, ``secret_sha256`` proves the key (the key
  itself is shown once and stored nowhere); scopes, expiry, revocation, last use.
- ``sessions``: an operator's log-ins: the SHA-256 of the session token (shown once), absolute
  expiry, last use (the idle timeout), revocation (log-out, disable, password reset).
"""
from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, String, Table, Text

from ledger.schema import Id, Ts, _id, metadata

principals = Table(
    "principals", metadata,
    _id("principal_id"),
    Column("kind", String(8), nullable=False),              # operator | client
    Column("name", String(40), nullable=False, unique=True),
    Column("display_name", String(120), nullable=False),
    Column("roles", String(200), nullable=False, server_default=""),   # space-separated role names (operators)
    Column("password_hash", String(200), nullable=True),    # Argon2id, operators only
    Column("totp_secret", String(100), nullable=True),      # base32, or sealed (totp.seal); never printed
    Column("totp_last_step", Integer, nullable=True),       # newest accepted 30 s step: a code is used once
    Column("disabled", String(1), nullable=False, server_default="N"),  # Y / N
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until", Ts, nullable=True),
    Column("created_at", Ts, nullable=False),
    Column("changed_at", Ts, nullable=False),
    CheckConstraint("kind in ('operator','client')", name="kind"),
    CheckConstraint("disabled in ('Y','N')", name="disabled"),
)

api_keys = Table(
    "api_keys", metadata,
    _id("key_id"),
    Column("principal_id", Id, ForeignKey("principals.principal_id"), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("secret_sha256", String(64), nullable=False),    # hex SHA-256 of the key's secret part
    Column("scopes", Text, nullable=False),                 # space-separated permission names
    Column("created_at", Ts, nullable=False),
    Column("expires_at", Ts, nullable=False),
    Column("revoked_at", Ts, nullable=True),
    Column("last_used_at", Ts, nullable=True),
    Index(None, "principal_id"),
)

sessions = Table(
    "sessions", metadata,
    _id("session_id"),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("principal_id", Id, ForeignKey("principals.principal_id"), nullable=False),
    Column("source", String(100), nullable=False, server_default=""),   # where the log-in came from
    Column("created_at", Ts, nullable=False),
    Column("expires_at", Ts, nullable=False),               # absolute lifetime
    Column("last_seen_at", Ts, nullable=False),             # idle timeout counts from here
    Column("revoked_at", Ts, nullable=True),
    Index(None, "principal_id"),
)
