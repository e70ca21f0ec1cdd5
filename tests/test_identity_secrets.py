"""Passwords (policy, Argon2id, rehash), TOTP (window, once only) and the tokens' shapes, without a
database."""
from __future__ import annotations

from datetime import timedelta

import pytest

from ledger.errors import Refused
from ledger.identity.passwords import hash_new_password, policy_problems, verify
from ledger.identity.tokens import new_api_key, new_session_token, secret_matches, sha256_hex, split_api_key
from ledger.identity.totp import code_at, judge_code, new_secret, provisioning_uri, step_of
from identity_helpers import FAST, T0


@pytest.mark.parametrize("password,problem", [
    ("Sh0rt!", "shorter than 12"),
    ("alllowercaseletters", "needs 3 of"),
    ("ALICE-in-wonder-1", "contains the user name"),
    (" Leading-space-42", "white space"),
])
def test_the_policy_refuses_weak_passwords(password, problem):
    assert any(problem in p for p in policy_problems("alice", password, FAST))
    with pytest.raises(Refused, match=problem):
        hash_new_password("alice", password, FAST)


def test_a_good_password_hashes_with_argon2id_and_verifies():
    assert policy_problems("alice", "Correct-horse-42", FAST) == []
    stored = hash_new_password("alice", "Correct-horse-42", FAST)
    assert stored.startswith("$argon2id$") and "Correct-horse-42" not in stored
    assert verify(stored, "Correct-horse-42", FAST) == (True, None)
    assert verify(stored, "correct-horse-42", FAST) == (False, None)
    assert verify(None, "Correct-horse-42", FAST) == (False, None)         # no such user: a dummy is verified
    assert verify("not a hash", "Correct-horse-42", FAST) == (False, None)


def test_changed_parameters_give_a_new_hash_to_store():
    stored = hash_new_password("alice", "Correct-horse-42", FAST)
    stronger = FAST.model_copy(update={"argon2_time_cost": 2})
    matches, new_hash = verify(stored, "Correct-horse-42", stronger)
    assert matches and new_hash and "t=2" in new_hash
    assert verify(new_hash, "Correct-horse-42", stronger) == (True, None)


def test_totp_accepts_one_step_either_side_once():
    secret = new_secret()
    now_step = step_of(T0)
    assert judge_code(secret, code_at(secret, T0), T0, None) == now_step
    assert judge_code(secret, code_at(secret, T0 + timedelta(seconds=30)), T0, None) == now_step + 1
    assert judge_code(secret, code_at(secret, T0 - timedelta(seconds=30)), T0, None) == now_step - 1
    assert judge_code(secret, code_at(secret, T0 - timedelta(seconds=60)), T0, None) == "bad_totp"
    assert judge_code(secret, code_at(secret, T0 + timedelta(seconds=60)), T0, None) == "bad_totp"
    assert judge_code(secret, code_at(secret, T0), T0, now_step) == "totp_replayed"
    assert judge_code(secret, code_at(secret, T0 - timedelta(seconds=30)), T0, now_step) == "totp_replayed"
    for junk in ("", "12345", "abcdef", "1234567"):
        assert judge_code(secret, junk, T0, None) == "bad_totp"


def test_totp_codes_are_rfc_6238():
    """RFC 6238's SHA-1 test vector (the 20-byte secret "12345678901234567890", 8 digits 94287082 at 59 s:
    the last 6 of them)."""
    import base64
    from datetime import datetime, timezone

    secret = base64.b32encode(b"12345678901234567890").decode()
    assert code_at(secret, datetime.fromtimestamp(59, timezone.utc)) == "287082"
    uri = provisioning_uri(secret, "alice", "gridpay")
    assert uri.startswith("otpauth://totp/gridpay:alice?") and f"secret={secret}" in uri


def test_keys_and_tokens_are_shown_once_and_stored_as_hashes():
    key, prefix, digest = new_api_key()
    assert key.startswith(f"gpk_{prefix}_") and len(prefix) == 12
    found_prefix, secret = split_api_key(key)
    assert found_prefix == prefix and secret_matches(secret, digest) and key not in digest
    assert not secret_matches(secret + "x", digest)
    for bad in ("", "gpk_", "gps_abc_def", f"gpk_{prefix}_", "gpk_short_secret"):
        assert split_api_key(bad) is None
    token, token_digest = new_session_token()
    assert token.startswith("gps_") and token_digest == sha256_hex(token) and new_session_token()[0] != token
    assert new_api_key()[0] != key
