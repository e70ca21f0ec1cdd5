"""TOTP second factor (RFC 6238 with pyotp: 30-second steps, 6 digits, one step either side).

A code is accepted once: the step it belongs to is stored (``principals.totp_last_step``) and no code
of that step or an earlier one is accepted again, so a code seen over someone's shoulder (or
replayed from a log) is worth nothing.
"""
from __future__ import annotations

import hmac
from datetime import datetime

import pyotp

STEP_S = 30
WINDOW = 1   # steps accepted either side of now (clock drift of the operator's phone)


def new_secret() -> str:
    return pyotp.random_base32()


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
