"""MAC methods, by name (§4.2). Each takes a key and the MAC input and returns 8 bytes.

``x919``: ANSI X9.19 = ISO/IEC 9797-1 MAC algorithm 3 with DES, padding method 1, under a
double-length key (left half for the CBC chain, right half for the final decrypt).
``x99``: ANSI X9.9 = plain DES CBC-MAC, padding method 1, under the left half of the key;
the full 8-byte last block is the MAC.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Callable

from Crypto.Cipher import DES, DES3

MacFunction = Callable[[bytes, bytes], bytes]
ZERO_BLOCK = bytes(8)


def pad_method1(data: bytes) -> bytes:
    """Zero bytes up to a multiple of 8; empty data becomes one zero block."""
    return data + bytes(-len(data) % 8) if data else ZERO_BLOCK


def pad_method2(data: bytes) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % 8)


def iso9797_alg3(key: bytes, key2: bytes, data: bytes, padding: int = 1, cipher=DES) -> bytes:
    """Reference ISO/IEC 9797-1 algorithm 3, block by block (slow; for tests and checks)."""
    data = pad_method1(data) if padding == 1 else pad_method2(data)
    first, second = cipher.new(key, cipher.MODE_ECB), cipher.new(key2, cipher.MODE_ECB)
    chain = ZERO_BLOCK
    for i in range(0, len(data), 8):
        chain = first.encrypt(bytes(a ^ b for a, b in zip(chain, data[i:i + 8])))
    return first.encrypt(second.decrypt(chain))


class _CbcChain:
    """A DES CBC-MAC engine that keeps one cipher object per key.

    pycryptodome cipher objects are slow to build (key schedule + wrapper), so the CBC object
    is reused: it is left chained on the last ciphertext block, and the next message's first
    block is XORed with that block, which restarts the chain from a zero IV.
    """

    def __init__(self, left: bytes, final):
        self._cbc = DES.new(left, DES.MODE_CBC, iv=ZERO_BLOCK)
        self._last = 0
        self._final = final
        self._lock = threading.Lock()
        self._raw = _RawCalls.attach(self._cbc, final)

    def __call__(self, data: bytes) -> bytes:
        data = pad_method1(data)
        head, tail = data[:-8], data[-8:]
        with self._lock:
            chained = 0
            if head:
                first = (int.from_bytes(head[:8], "big") ^ self._last).to_bytes(8, "big")
                out = (self._raw or self._cbc).encrypt(first + head[8:])
                chained = self._last = int.from_bytes(out[-8:], "big")
            block = (int.from_bytes(tail, "big") ^ chained).to_bytes(8, "big")
            return (self._raw.final if self._raw else self._final.encrypt)(block)


class _RawCalls:
    """Calls pycryptodome's C functions directly, skipping its per-call Python wrapper (about
    half of a MAC's cost here). Used only with the cffi backend and only if it gives the same
    answer as the wrapper on a test block; otherwise the wrapper is used."""

    def __init__(self, cbc, final):
        from Crypto.Cipher._mode_cbc import CbcMode, raw_cbc_lib
        from Crypto.Cipher._mode_ecb import EcbMode, raw_ecb_lib
        from Crypto.Util._raw_api import ffi

        if not (isinstance(cbc, CbcMode) and isinstance(final, EcbMode)):
            raise TypeError("unexpected cipher objects")

        self._ffi = ffi
        self._cbc_encrypt, self._cbc_state = raw_cbc_lib.CBC_encrypt, cbc._state.get()
        self._ecb_encrypt, self._ecb_state = raw_ecb_lib.ECB_encrypt, final._state.get()
        self._objects = (cbc, final)  # keep the C states alive
        self._size = 512
        self._out = ffi.new("uint8_t[]", self._size)
        self._block = ffi.new("uint8_t[]", 8)

    @classmethod
    def attach(cls, cbc, final) -> "_RawCalls | None":
        from Crypto.Util._raw_api import backend

        if backend != "cffi":
            return None
        try:
            raw = cls(cbc, final)
            probe = bytes(range(8))
            if raw.final(probe) != final.encrypt(probe):
                return None
        except Exception:  # noqa: BLE001 - any surprise in the internals: use the public API
            return None
        return raw

    def encrypt(self, data: bytes) -> bytes:
        size = len(data)
        if size > self._size:
            self._size = size
            self._out = self._ffi.new("uint8_t[]", size)
        if self._cbc_encrypt(self._cbc_state, data, self._out, size):
            raise ValueError("DES CBC failed")
        return self._ffi.buffer(self._out, size)[size - 8:]

    def final(self, block: bytes) -> bytes:
        if self._ecb_encrypt(self._ecb_state, block, self._block, 8):
            raise ValueError("DES ECB failed")
        return self._ffi.buffer(self._block)[:]


def _double_length(key: bytes) -> tuple[bytes, bytes]:
    if len(key) != 16:
        raise ValueError(f"a MAC key is 16 bytes, got {len(key)}")
    return key[:8], key[8:]


@lru_cache(maxsize=512)
def _x919_engine(key: bytes) -> _CbcChain:
    left, right = _double_length(key)
    # The last block goes through E(left) D(right) E(left): two-key 3DES EDE, or plain DES when
    # the halves are equal (pycryptodome refuses a 3DES key that degenerates to DES).
    final = DES.new(left, DES.MODE_ECB) if left == right else DES3.new(key, DES3.MODE_ECB)
    return _CbcChain(left, final)


@lru_cache(maxsize=512)
def _x99_engine(key: bytes) -> _CbcChain:
    left = key[:8] if len(key) in (8, 16) else _double_length(key)[0]
    return _CbcChain(left, DES.new(left, DES.MODE_ECB))


def x919(key: bytes, data: bytes) -> bytes:
    return _x919_engine(bytes(key))(data)


def x99(key: bytes, data: bytes) -> bytes:
    return _x99_engine(bytes(key))(data)


METHODS: dict[str, MacFunction] = {"x919": x919, "x99": x99}


def mac_method(name: str) -> MacFunction:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown MAC method {name!r}; known: {', '.join(sorted(METHODS))}") from None
