"""DES and two-key 3DES through ``cryptography`` (OpenSSL).

Single DES is 3DES with K|K|K and two-key 3DES is K1|K2|K1 (24-byte keys, so no deprecation
warnings). ``cryptography`` keeps the interpreter lock for these tiny calls; pycryptodome's
cffi calls give it up and wait to get it back, which under a busy gateway costs more than
the cipher itself.
"""
from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

ZERO_BLOCK = bytes(8)


def _key24(key: bytes) -> bytes:
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    raise ValueError(f"a DES key is 8 or 16 bytes, got {len(key)}")


class Ecb:
    """ECB under a single (8-byte) or double-length (16-byte) key."""

    def __init__(self, key: bytes):
        cipher = Cipher(TripleDES(_key24(key)), modes.ECB())
        self._enc, self._dec = cipher.encryptor(), cipher.decryptor()

    def encrypt(self, data: bytes) -> bytes:
        return self._enc.update(data)

    def decrypt(self, data: bytes) -> bytes:
        return self._dec.update(data)


def cbc_encryptor(key: bytes):
    """A DES-CBC encryption context with a zero IV; it stays chained on its last output block."""
    return Cipher(TripleDES(_key24(key)), modes.CBC(ZERO_BLOCK)).encryptor()


def with_odd_parity(key: bytes) -> bytes:
    """Each byte's low bit set so the byte has an odd number of 1 bits (DES key parity)."""
    return bytes((b & 0xFE) | (bin(b >> 1).count("1") + 1) % 2 for b in key)
