from twisted.internet.task import Clock

from ledger.key_store import KeyStore

K1, K2, K3 = bytes(range(16)), bytes(range(1, 17)), bytes(range(2, 18))


def test_new_key_replaces_old_with_grace():
    clock = Clock()
    keys = KeyStore(clock, grace_s=60)
    assert keys.accepted("0102", "counter") == []
    keys.install("0102", "counter", K1)
    assert keys.accepted("0102", "counter") == [K1]
    clock.advance(10)
    keys.install("0102", "counter", K2)
    assert keys.accepted("0102", "counter") == [K2, K1]
    clock.advance(59.9)
    assert keys.accepted("0102", "counter") == [K2, K1]
    clock.advance(0.2)
    assert keys.accepted("0102", "counter") == [K2]


def test_sign_off_drops_key_and_grace():
    keys = KeyStore(Clock())
    keys.install("0102", "counter", K1)
    keys.install("0102", "counter", K2)
    keys.drop("0102", "counter")
    assert keys.accepted("0102", "counter") == []
    assert not keys.signed_on("0102", "counter")


def test_channels_and_banks_are_independent():
    keys = KeyStore(Clock())
    keys.install("0102", "counter", K1)
    keys.install("0103", "counter", K2)
    keys.install("0102", "debit", K3)
    assert keys.accepted("0102", "counter") == [K1]
    assert keys.accepted("0103", "counter") == [K2]
    assert keys.accepted("0102", "debit") == [K3]


def test_the_store_answers_only_the_banks_whose_newest_key_is_newer(db_url):
    """What a gateway's or an engine's poll reads: one statement for every bank, the keys of those
    another process changed since (a sign-on, a sign-off), nothing for the rest."""
    from config.clock import Clock
    from ledger.key_store_db import DbKeyBackend
    from ledger_helpers import new_engine

    zmk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    engine = new_engine(db_url)
    backend = DbKeyBackend(engine, lambda bank: zmk, Clock())
    here, there = KeyStore(Clock(), backend=backend), KeyStore(Clock(), backend=backend)
    there.install("01020000", "counter", b"A" * 16)
    there.install("01030000", "counter", b"B" * 16)
    there.install("01030000", "debit", b"D" * 16)
    found = backend.newer("counter", {"01020000": 0, "01030000": 0, "01040000": 0})
    assert {b: (s.current, s.version) for b, s in found.items()} == {"01020000": (b"A" * 16, 1),
                                                                     "01030000": (b"B" * 16, 1)}
    for bank, state in found.items():
        assert here.take(bank, "counter", state)
    assert backend.newer("counter", {b: here.version(b, "counter") for b in ("01020000", "01030000")}) == {}
    there.install("01030000", "counter", b"C" * 16)
    there.drop("01020000", "counter")
    found = backend.newer("counter", {b: here.version(b, "counter") for b in ("01020000", "01030000")})
    assert {b: (s.current, s.previous, s.version) for b, s in found.items()} == {
        "01020000": (None, None, 2), "01030000": (b"C" * 16, b"B" * 16, 2)}
    engine.dispose()
