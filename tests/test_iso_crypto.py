"""MAC methods and keys."""
import os

from Crypto.Cipher import DES  # an independent DES implementation to check ours against

from iso8583_specs import MAC_METHODS, check_value, decrypt_key, encrypt_key, generate_mak
from iso8583_specs.keys import has_odd_parity
from iso8583_specs.mac import iso9797_alg3, x99, x919


def test_iso9797_alg3_known_answer():
    # ISO 9797-1 alg. 3 (ANSI X9.19) with 3DES block ciphers K1, K2 and padding method 2.
    k1 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    k2 = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
    data = bytes.fromhex("1234567890ABCDEF")
    assert iso9797_alg3(k1, k2, data, padding=2).hex().upper() == "644AA5C915DBDAF8"  # 16-byte keys: 3DES


def test_x919_is_alg3_with_des_halves_and_zero_padding():
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    data = bytes.fromhex("1234567890ABCDEF")   # exactly one block: padding method 1 adds nothing
    assert x919(key, data) == iso9797_alg3(key[:8], key[8:], data)
    assert x919(key, data) == x919(key, data + bytes(0))
    for size in list(range(0, 40)) + [155, 300, 1000]:
        key, data = os.urandom(16), os.urandom(size)
        for _ in range(2):   # the cached chain must restart cleanly on every message
            assert x919(key, data) == iso9797_alg3(key[:8], key[8:], data)


def test_x99_is_des_cbc_mac_under_the_left_half():
    for size in (1, 8, 9, 64, 155):
        key, data = os.urandom(16), os.urandom(size)
        padded = data + bytes(-size % 8)
        assert x99(key, data) == DES.new(key[:8], DES.MODE_CBC, iv=bytes(8)).encrypt(padded)[-8:]


def test_x919_with_equal_halves_is_plain_cbc_mac():
    key = bytes.fromhex("0123456789ABCDEF") * 2
    assert x919(key, b"abc") == x99(key, b"abc")


def test_methods_are_registered_by_name():
    assert MAC_METHODS["x919"] is x919 and MAC_METHODS["x99"] is x99


def test_mak_generation_parity_and_protection():
    zmk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    keys = {generate_mak() for _ in range(50)}
    assert len(keys) == 50
    for mak in keys:
        assert len(mak) == 16 and has_odd_parity(mak) and mak[:8] != mak[8:]
        assert decrypt_key(zmk, encrypt_key(zmk, mak)) == mak
        assert len(check_value(mak)) == 6


def test_check_value_is_3des_of_zeros():
    mak = bytes.fromhex("89B07B35A1B3F47E4C7D2A0B91E3C5D7")
    assert check_value(mak) == "EF4861"
