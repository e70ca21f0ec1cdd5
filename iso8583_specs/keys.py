"""MAC keys (docs/spec/INTERFACE.md §4.1): generation, protection under the ZMK, check values, sign-on field 48."""
from __future__ import annotations

import hmac
import secrets

from .des import Ecb, with_odd_parity

from .errors import MessageError
from .tlv import Tlv

KEY_BYTES = 16


def _tdes(key: bytes):
    """3DES-ECB under a double-length key (plain DES when both halves are equal)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a double-length key is 16 bytes, got {len(key)}")
    return Ecb(key)


def has_odd_parity(key: bytes) -> bool:
    return all(bin(b).count("1") % 2 == 1 for b in key)


def generate_mak() -> bytes:
    """A fresh random double-length key with odd parity (halves never equal)."""
    while True:
        key = with_odd_parity(secrets.token_bytes(KEY_BYTES))
        if key[:8] != key[8:]:  # a key whose halves are equal is single DES: draw again
            return key


def encrypt_key(zmk: bytes, key: bytes) -> bytes:
    return _tdes(zmk).encrypt(key)


def decrypt_key(zmk: bytes, encrypted: bytes) -> bytes:
    return _tdes(zmk).decrypt(encrypted)


def check_value(key: bytes) -> str:
    """First 3 bytes of the 3DES encryption of 8 zero bytes, as 6 uppercase hex characters."""
    return _tdes(key).encrypt(bytes(8))[:3].hex().upper()


def sign_on_field48(zmk: bytes, mak: bytes) -> str:
    """0810 field 48: ``MK`` (MAK under the ZMK, 32 hex) and ``KV`` (its check value)."""
    return Tlv([("MK", encrypt_key(zmk, mak).hex().upper()), ("KV", check_value(mak))]).encode()


def read_sign_on_field48(zmk: bytes, value: str) -> bytes:
    """The clear MAK from a sign-on response's field 48; raises MessageError if it does not check."""
    tlv = Tlv.parse(value)
    mk, kv = tlv.get("MK"), tlv.get("KV")
    if mk is None or kv is None:
        raise MessageError("field 48: MK and KV required on sign-on", field=48)
    try:
        encrypted = bytes.fromhex(mk)
    except ValueError:
        encrypted = b""
    if len(encrypted) != KEY_BYTES:
        raise MessageError("field 48: MK must be 32 hexadecimal characters", field=48)
    mak = decrypt_key(zmk, encrypted)
    if not hmac.compare_digest(check_value(mak).encode(), kv.upper().encode("ascii", "replace")):
        raise MessageError("field 48: key check value does not match", field=48)
    return mak
