"""TOTP second factor (RFC 6238 with pyotp: 30-second steps, 6 digits, one step either side).

A code is accepted once: the step it belongs to is stored (``principals.totp_last_step``) and no code
of that step or an earlier one is accepted again, so a code seen over someone's shoulder (or
replayed from a log) is worth nothing.
"""
from __future__ import annotations

import base64
import hmac
import os
from datetime import datetime

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config.errors import ConfigError

STEP_S = 30
WINDOW = 1   # steps accepted either side of now (clock drift of the operator's phone)


def new_secret() -> str:
    return pyotp.random_base32()


SEALED = "v1:"   # an encrypted secret: v1:<base64url(nonce + AES-256-GCM ciphertext and tag)>


def seal(secret: str, name: str, key: bytes | None) -> str:
    """What ``principals.totp_secret`` stores: the secret encrypted under ``[access]``'s key, bound
    to the operator's name (a sealed secret copied to another row does not open); as it is when no
    key is configured."""
    if key is None:
        return secret
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, secret.encode("ascii"), f"totp:{name}".encode())
    return SEALED + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(stored: str, name: str, key: bytes | None) -> str:
    if not stored.startswith(SEALED):
        return stored
    if key is None:
        raise ConfigError("access.totp_key", "the TOTP secrets are encrypted but no key is configured "
                                             "(totp_key_env or totp_key_file)")
    raw = base64.urlsafe_b64decode(stored[len(SEALED):])
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], f"totp:{name}".encode()).decode("ascii")
    except InvalidTag:
        raise ConfigError("access.totp_key", f"does not open {name}'s TOTP secret (another key?)") from None


def provisioning_uri(secret: str, user: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app enrols from (shown once)."""
    return pyotp.TOTP(secret, interval=STEP_S).provisioning_uri(name=user, issuer_name=issuer)


def step_of(at: datetime) -> int:
    return int(at.timestamp()) // STEP_S


def code_at(secret: str, at: datetime) -> str:
    return pyotp.TOTP(secret, interval=STEP_S).at(at)


def judge_code(secret: str, code: str, now: datetime, last_step: int | None) -> int | str:
    """The step ``code`` belongs to (now, or one step either side) when it is newer than
    ``last_step``; else why not: ``bad_totp`` (wrong or too old) or ``totp_replayed`` (its step,
    or a later one, was used already)."""
    code = (code or "").strip()
    if not (code.isdigit() and len(code) == 6):
        return "bad_totp"
    totp = pyotp.TOTP(secret, interval=STEP_S)
    now_step = step_of(now)
    matched = [step for step in range(now_step - WINDOW, now_step + WINDOW + 1)
               if hmac.compare_digest(totp.generate_otp(step), code)]
    fresh = [step for step in matched if last_step is None or step > last_step]
    if fresh:
        return fresh[-1]
    return "totp_replayed" if matched else "bad_totp"
