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
