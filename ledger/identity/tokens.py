"""The secrets handed out once: API keys and session tokens.

An API key reads ``gpk_<prefix>_<secret>``: the prefix (12 hex digits) finds its row, the secret
(43 URL-safe characters, 256 bits) proves it; only the secret's SHA-256 is stored (a secret that
long needs no slow hash: there is nothing to guess). A session token is ``gps_<secret>``, stored as
its SHA-256 alone.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_MARK, SESSION_MARK = "gpk", "gps"
PREFIX_HEX = 12


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """(the key to show once, its prefix, its secret's SHA-256)."""
    prefix, secret = secrets.token_hex(PREFIX_HEX // 2), secrets.token_urlsafe(32)
    return f"{KEY_MARK}_{prefix}_{secret}", prefix, sha256_hex(secret)


def split_api_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    mark, _, rest = (key or "").strip().partition("_")
    prefix, _, secret = rest.partition("_")
    if mark != KEY_MARK or len(prefix) != PREFIX_HEX or not secret:
        return None
    return prefix, secret


def secret_matches(secret: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(sha256_hex(secret), stored_sha256)


def new_session_token() -> tuple[str, str]:
    """(the token to show once, its SHA-256)."""
    token = f"{SESSION_MARK}_{secrets.token_urlsafe(32)}"
    return token, sha256_hex(token)
