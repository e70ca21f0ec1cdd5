"""Log-in, lock-out, sessions and API keys on a real database (SQLite and PostgreSQL), driven by
``now``: every refusal audited with its actor and counted by reason."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select, text

from ledger.identity import (
    AuthMetrics, Forbidden, NotAuthenticated, authenticate_api_key, authenticate_session, authorize, login, logout,
    reset, revoke_key, set_disabled, set_roles,
)
from ledger.errors import Refused
from ledger.identity.tables import principals, sessions
from ledger.identity.totp import code_at
from identity_helpers import ADMIN, FAST, PASSWORD, T0, add_client_key, add_people, audit_rows, identity_engine, refusals


@pytest.fixture
def engine(db_url):
    engine = identity_engine(db_url)
    add_people(engine, alice=["clerk"], bob=["finance", "auditor"])
    yield engine
    engine.dispose()


@pytest.fixture
def metrics():
    return AuthMetrics()


def refused(call, code: str):
    with pytest.raises(NotAuthenticated) as caught:
        call()
    assert caught.value.code == code, caught.value.code
    return caught.value


def test_login_gives_a_session_shown_once_and_audited(engine, metrics):
    session = login(engine, "alice", PASSWORD, None, T0, "10.0.0.7", access=FAST, metrics=metrics)
    assert session.principal.actor == "operator:alice" and session.principal.roles == ("clerk",)
    assert "refund.request" in session.principal.permissions and "refund.payout" not in session.principal.permissions
    assert session.expires_at == T0 + timedelta(hours=12)
    with engine.connect() as conn:
        stored = conn.execute(select(sessions.c.token_sha256)).scalars().all()
    assert session.token.startswith("gps_") and session.token not in stored and len(stored) == 1
    again = authenticate_session(engine, session.token, T0 + timedelta(minutes=5), access=FAST, metrics=metrics)
    assert again == session.principal
    [row] = audit_rows(engine, "login")
    assert row["actor"] == "operator:alice" and row["details"]["source"] == "10.0.0.7"


def test_wrong_password_and_unknown_user_are_refused_alike_audited_and_counted(engine, metrics, caplog):
    caplog.set_level("INFO", logger="gridpay.access")
    wrong = refused(lambda: login(engine, "alice", "Wrong-password-1", None, T0, "cli", access=FAST, metrics=metrics),
                    "bad_credentials")
    nobody = refused(lambda: login(engine, "mallory", PASSWORD, None, T0, "cli", access=FAST, metrics=metrics),
                     "bad_credentials")
    assert str(wrong) == str(nobody)                     # a stranger cannot tell which names exist
    rows = audit_rows(engine, "login.refused")
    assert [(r["actor"], r["reason"]) for r in rows] == [("claimed:alice", "bad_password"),
                                                          ("claimed:mallory", "unknown_user")]
    assert refusals(metrics, "bad_password") == 1 and refusals(metrics, "unknown_user") == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "gridpay.access"]
    assert len(logged) == 2 and "claimed:alice: bad_password" in logged[0] and "Wrong-password-1" not in str(logged)
    client = refused(lambda: login(engine, "", PASSWORD, None, T0, access=FAST, metrics=metrics), "bad_credentials")
    assert client and audit_rows(engine, "login.refused")[-1]["actor"] == "anonymous"


def test_lock_out_after_n_failures_and_unlock_after_m_minutes(engine, metrics):
    access = FAST.model_copy(update={"max_failed_logins": 3, "lockout_minutes": 10})
    for i in range(3):
        refused(lambda: login(engine, "alice", "Wrong-password-1", None, T0 + timedelta(seconds=i), access=access,
                              metrics=metrics), "bad_credentials")
    locked_at = T0 + timedelta(seconds=2)
    # locked: even the right password is refused, and trying does not extend the lock
    refused(lambda: login(engine, "alice", PASSWORD, None, locked_at + timedelta(minutes=9), access=access,
                          metrics=metrics), "locked")
    assert refusals(metrics, "locked") == 1 and refusals(metrics, "bad_password") == 3
    third = audit_rows(engine, "login.refused")[2]
    assert third["details"]["failed_logins"] == 3 and "locked_until" in third["details"]
    # another operator is not locked
    login(engine, "bob", PASSWORD, None, locked_at + timedelta(minutes=1), access=access, metrics=metrics)
    session = login(engine, "alice", PASSWORD, None, locked_at + timedelta(minutes=10), access=access, metrics=metrics)
    assert session.principal.name == "alice"
    with engine.connect() as conn:
        assert conn.execute(select(principals.c.failed_logins).where(principals.c.name == "alice")).scalar_one() == 0


def test_a_reset_clears_the_lock_out_and_ends_sessions(engine, metrics):
    first = login(engine, "alice", PASSWORD, None, T0, access=FAST, metrics=metrics)
    for _ in range(5):
        refused(lambda: login(engine, "alice", "Wrong-password-1", None, T0, access=FAST, metrics=metrics),
                "bad_credentials")
    refused(lambda: login(engine, "alice", PASSWORD, None, T0, access=FAST, metrics=metrics), "locked")
    with engine.begin() as conn:
        assert reset(conn, T0, ADMIN, "alice", "Brand-new-pass-7", FAST) is None
    refused(lambda: authenticate_session(engine, first.token, T0, access=FAST, metrics=metrics), "not_authenticated")
    login(engine, "alice", "Brand-new-pass-7", None, T0 + timedelta(seconds=1), access=FAST, metrics=metrics)
    [row] = audit_rows(engine, "principal.reset")
    assert row["actor"] == "operator:root" and row["details"]["os_login"] == "tester"
    assert row["details"]["was_locked"] is True and row["details"]["sessions_ended"] == 1
    assert "Brand-new-pass-7" not in str(audit_rows(engine))


def test_sessions_expire_idle_and_at_their_lifetime_and_end_at_logout(engine, metrics):
    access = FAST.model_copy(update={"session_idle_minutes": 30, "session_lifetime_hours": 2})
    idle = login(engine, "alice", PASSWORD, None, T0, access=access, metrics=metrics)
    authenticate_session(engine, idle.token, T0 + timedelta(minutes=29), access=access, metrics=metrics)
    refused(lambda: authenticate_session(engine, idle.token, T0 + timedelta(minutes=59), access=access,
                                         metrics=metrics), "session_expired")
    busy = login(engine, "bob", PASSWORD, None, T0, access=access, metrics=metrics)
    for minutes in range(20, 120, 20):                   # used every 20 minutes: never idle
        authenticate_session(engine, busy.token, T0 + timedelta(minutes=minutes), access=access, metrics=metrics)
    refused(lambda: authenticate_session(engine, busy.token, T0 + timedelta(minutes=120), access=access,
                                         metrics=metrics), "session_expired")
    assert refusals(metrics, "session_idle") == 1 and refusals(metrics, "session_expired") == 1
    out = login(engine, "bob", PASSWORD, None, T0 + timedelta(hours=3), access=access, metrics=metrics)
    assert logout(engine, out.token, T0 + timedelta(hours=3)) is True
    assert logout(engine, out.token, T0 + timedelta(hours=3)) is False
    refused(lambda: authenticate_session(engine, out.token, T0 + timedelta(hours=3), access=access, metrics=metrics),
            "not_authenticated")
    refused(lambda: authenticate_session(engine, "gps_forged", T0, access=access, metrics=metrics),
            "not_authenticated")
    actors = [(r["actor"], r["reason"]) for r in audit_rows(engine, "session.refused")]
    assert actors == [("operator:alice", "session_idle"), ("operator:bob", "session_expired"),
                      ("operator:bob", "session_revoked"), ("anonymous", "no_session")]
    assert audit_rows(engine, "logout")[0]["actor"] == "operator:bob"


def test_disabling_ends_sessions_and_refuses_log_ins(engine, metrics):
    session = login(engine, "alice", PASSWORD, None, T0, access=FAST, metrics=metrics)
    with engine.begin() as conn:
        set_disabled(conn, T0, ADMIN, "alice", True, "left the company")
    refused(lambda: authenticate_session(engine, session.token, T0, access=FAST, metrics=metrics), "not_authenticated")
    refused(lambda: login(engine, "alice", PASSWORD, None, T0, access=FAST, metrics=metrics), "bad_credentials")
    assert audit_rows(engine, "login.refused")[-1]["reason"] == "disabled"
    with engine.begin() as conn:
        set_disabled(conn, T0, ADMIN, "alice", False)
    login(engine, "alice", PASSWORD, None, T0, access=FAST, metrics=metrics)
    assert [r["reason"] for r in audit_rows(engine) if r["action"].startswith("principal.")][-2:] == \
        ["left the company", ""]


def test_totp_within_one_step_once_only(engine, metrics):
    with engine.begin() as conn:
        uri = reset(conn, T0, ADMIN, "alice", PASSWORD, FAST, totp="enrol")
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    assert uri.startswith("otpauth://totp/") and "issuer=gridpay" in uri
    assert secret not in str(audit_rows(engine))
    refused(lambda: login(engine, "alice", PASSWORD, None, T0, access=FAST, metrics=metrics), "bad_credentials")
    previous_step = code_at(secret, T0 - timedelta(seconds=30))
    login(engine, "alice", PASSWORD, previous_step, T0, access=FAST, metrics=metrics)     # one step back: accepted
    refused(lambda: login(engine, "alice", PASSWORD, previous_step, T0 + timedelta(seconds=5), access=FAST,
                          metrics=metrics), "bad_credentials")                          # the same code again
    now_code = code_at(secret, T0 + timedelta(seconds=60))
    refused(lambda: login(engine, "alice", PASSWORD, code_at(secret, T0 - timedelta(seconds=30)),
                          T0 + timedelta(seconds=60), access=FAST, metrics=metrics), "bad_credentials")
    login(engine, "alice", PASSWORD, now_code, T0 + timedelta(seconds=60), access=FAST, metrics=metrics)
    reasons = [r["reason"] for r in audit_rows(engine, "login.refused")]
    assert reasons == ["totp_missing", "totp_replayed", "bad_totp"]


def test_a_hash_made_with_old_parameters_is_rehashed_at_log_in(engine, metrics):
    stronger = FAST.model_copy(update={"argon2_time_cost": 2, "argon2_memory_kib": 16})

    def stored():
        with engine.connect() as conn:
            return conn.execute(select(principals.c.password_hash).where(principals.c.name == "alice")).scalar_one()

    before = stored()
    assert before.startswith("$argon2id$") and "m=8,t=1" in before
    login(engine, "alice", PASSWORD, None, T0, access=stronger, metrics=metrics)
    assert "m=16,t=2" in stored()
    login(engine, "alice", PASSWORD, None, T0, access=stronger, metrics=metrics)
    assert audit_rows(engine, "login")[0]["details"]["rehashed"] is True


def test_api_key_is_shown_once_stored_hashed_and_checked(engine, metrics):
    key, key_id = add_client_key(engine, "billing", ["billing.import", "customer.read"], T0 + timedelta(days=90))
    assert key.startswith("gpk_")
    secret = key.split("_", 2)[2]                          # the secret itself may hold "_"
    assert len(secret) == 43
    with engine.connect() as conn:   # neither the key nor its secret is anywhere in the database
        for table in ("principals", "api_keys", "sessions", "audit_log"):
            for row in conn.execute(text(f"select * from {table}")):
                assert key not in str(tuple(row)) and secret not in str(tuple(row)), table
    client = authenticate_api_key(engine, key, T0 + timedelta(days=1), metrics=metrics)
    assert client.actor == "client:billing" and client.roles == ()
    assert client.permissions == {"billing.import", "customer.read"} and client.key_id == key_id
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    refused(lambda: authenticate_api_key(engine, forged, T0, metrics=metrics), "bad_key")
    refused(lambda: authenticate_api_key(engine, "not a key", T0, metrics=metrics), "bad_key")
    refused(lambda: authenticate_api_key(engine, key, T0 + timedelta(days=90), metrics=metrics), "key_expired")
    with engine.begin() as conn:
        revoke_key(conn, T0, ADMIN, key_id, "rotated")
    refused(lambda: authenticate_api_key(engine, key, T0 + timedelta(days=1), metrics=metrics), "bad_key")
    rows = [(r["actor"], r["reason"]) for r in audit_rows(engine, "api_key.refused")]
    assert rows == [("anonymous", "bad_key"), ("anonymous", "bad_key"), ("client:billing", "key_expired"),
                    ("client:billing", "key_revoked")]
    assert refusals(metrics, "bad_key") == 2


def test_a_disabled_clients_keys_stop_working(engine, metrics):
    key, _ = add_client_key(engine, "callcentre", ["customer.read"], T0 + timedelta(days=30))
    with engine.begin() as conn:
        set_disabled(conn, T0, ADMIN, "callcentre", True)
    refused(lambda: authenticate_api_key(engine, key, T0, metrics=metrics), "bad_key")
    assert audit_rows(engine, "api_key.refused")[-1]["reason"] == "key_disabled"


def test_a_forbidden_action_is_audited_with_the_principal(engine, metrics):
    session = login(engine, "alice", PASSWORD, None, T0, access=FAST, metrics=metrics)
    authorize(engine, session.principal, "refund.request", T0, metrics=metrics)
    with pytest.raises(Forbidden) as caught:
        authorize(engine, session.principal, "principal.manage", T0, metrics=metrics)
    assert caught.value.code == "forbidden" and "operator:alice may not" in str(caught.value)
    [row] = audit_rows(engine, "access.forbidden")
    assert row["actor"] == "operator:alice" and row["details"]["permission"] == "principal.manage"
    assert refusals(metrics, "forbidden") == 1


def test_an_administrator_cannot_lock_themselves_out_and_refused_changes_change_nothing(engine):
    root = ADMIN   # operator:root, the first administrator
    with engine.begin() as conn:
        with pytest.raises(Refused, match="cannot disable themselves"):
            set_disabled(conn, T0, root, "root", True)
        with pytest.raises(Refused, match="own administrator role"):
            set_roles(conn, T0, root, "root", ["auditor"])
        with pytest.raises(Refused, match="roles refused"):
            set_roles(conn, T0, root, "alice", ["clerk", "superuser"])
        set_roles(conn, T0, root, "alice", ["clerk", "finance"])
    with engine.connect() as conn:
        rows = dict(conn.execute(select(principals.c.name, principals.c.roles)).all())
    assert rows == {"root": "administrator", "alice": "clerk finance", "bob": "auditor finance"}
    [change] = audit_rows(engine, "principal.roles")
    assert change["details"]["before"] == "clerk" and change["details"]["roles"] == "clerk finance"


def test_totp_secrets_are_stored_encrypted_when_a_key_is_configured(engine, metrics, monkeypatch):
    from config import ConfigError
    from config.settings import AccessConfig

    monkeypatch.setenv("TEST_TOTP_KEY", "11" * 32)
    monkeypatch.setenv("OTHER_TOTP_KEY", "22" * 32)
    keyed = FAST.model_copy(update={"totp_key_env": "TEST_TOTP_KEY"})
    with engine.begin() as conn:
        uri = reset(conn, T0, ADMIN, "alice", PASSWORD, keyed, totp="enrol")
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    with engine.connect() as conn:
        stored = conn.execute(select(principals.c.totp_secret).where(principals.c.name == "alice")).scalar_one()
    assert stored.startswith("v1:") and secret not in stored
    login(engine, "alice", PASSWORD, code_at(secret, T0), T0, access=keyed, metrics=metrics)
    later = T0 + timedelta(minutes=1)
    with pytest.raises(ConfigError, match="no key is configured"):
        login(engine, "alice", PASSWORD, code_at(secret, later), later, access=FAST, metrics=metrics)
    with pytest.raises(ConfigError, match="does not open"):
        login(engine, "alice", PASSWORD, code_at(secret, later), later,
              access=FAST.model_copy(update={"totp_key_env": "OTHER_TOTP_KEY"}), metrics=metrics)
    with engine.begin() as conn:   # a sealed secret is bound to its operator's row
        conn.execute(principals.update().where(principals.c.name == "bob").values(totp_secret=stored))
    with pytest.raises(ConfigError, match="bob's TOTP secret"):
        login(engine, "bob", PASSWORD, code_at(secret, later), later, access=keyed, metrics=metrics)
    with pytest.raises(ValueError, match="not both"):
        AccessConfig(totp_key_env="A", totp_key_file="/b")
    monkeypatch.setenv("SHORT_TOTP_KEY", "11" * 16)
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        FAST.model_copy(update={"totp_key_env": "SHORT_TOTP_KEY"}).totp_key()


def _at_once(calls):
    """Run the calls in threads together; each one's result or exception."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    barrier = Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test looks at
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_failures_lock_the_account_exactly_at_the_limit(engine, metrics):
    outcomes = _at_once([lambda: login(engine, "alice", "Wrong-password-1", None, T0, access=FAST, metrics=metrics)
                         for _ in range(8)])
    assert all(isinstance(o, NotAuthenticated) for o in outcomes)
    assert sorted(o.code for o in outcomes) == ["bad_credentials"] * 5 + ["locked"] * 3
    assert refusals(metrics, "bad_password") == 5 and refusals(metrics, "locked") == 3


def test_two_first_administrators_at_once_make_one(db_url):
    from ledger.identity import add_first_admin
    from ledger.identity.admin import PrincipalsExist

    engine = identity_engine(db_url)

    def bootstrap(name):
        with engine.begin() as conn:
            return add_first_admin(conn, T0, name, name.title(), PASSWORD, "tester", FAST)

    outcomes = _at_once([lambda n=n: bootstrap(n) for n in ("ann", "ben", "cid", "dan")])
    made = [o for o in outcomes if isinstance(o, tuple)]
    assert len(made) == 1 and sum(isinstance(o, PrincipalsExist) for o in outcomes) == 3, outcomes
    with engine.connect() as conn:
        assert len(conn.execute(select(principals.c.name)).all()) == 1
    engine.dispose()
