"""Operators' passwords: Argon2id hashes (argon2-cffi) and the minimum policy.

The hash's parameters come from ``[access]`` (``argon2_*``); a hash made with other parameters
still verifies, and ``verify`` hands back a new hash for the caller to store (parameters raised
after an incident reach every account at its next log-in).
"""
from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from config.settings import AccessConfig
from ledger.errors import Refused

KINDS_NEEDED = 3   # of: lower case, upper case, digits, other characters


@lru_cache(maxsize=8)
def hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def hasher_for(access: AccessConfig) -> PasswordHasher:
    return hasher(access.argon2_time_cost, access.argon2_memory_kib, access.argon2_parallelism)


def policy_problems(user: str, password: str, access: AccessConfig) -> list[str]:
    """Why a password may not be given to ``user`` (empty: it may)."""
    out = []
    if len(password) < access.password_min_length:
        out.append(f"shorter than {access.password_min_length} characters")
    kinds = sum(any(test(c) for c in password)
                for test in (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum()))
    if kinds < KINDS_NEEDED:
        out.append(f"needs {KINDS_NEEDED} of: lower case, upper case, digits, other characters")
    if user and user.lower() in password.lower():
        out.append("contains the user name")
    if password != password.strip():
        out.append("begins or ends with white space")
    return out


def hash_new_password(user: str, password: str, access: AccessConfig) -> str:
    """The hash to store; ``Refused`` (nothing stored) when the policy says no."""
    problems = policy_problems(user, password, access)
    if problems:
        raise Refused("password refused: " + "; ".join(problems))
    return hasher_for(access).hash(password)


def verify(stored_hash: str | None, password: str, access: AccessConfig) -> tuple[bool, str | None]:
    """(matches, new hash to store or None). With no stored hash (no such user, or a client) a
    dummy hash is verified, so that the answer takes as long either way."""
    ph = hasher_for(access)
    try:
        ph.verify(stored_hash or _dummy_hash(access.argon2_time_cost, access.argon2_memory_kib,
                                            access.argon2_parallelism), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if stored_hash is None:
        return False, None
    return True, (ph.hash(password) if ph.check_needs_rehash(stored_hash) else None)


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_kib: int, parallelism: int) -> str:
    return hasher(time_cost, memory_kib, parallelism).hash("no such principal: a dummy to verify against")
