"""MAC methods, by name (docs/spec/INTERFACE.md §4.2). Each takes a key and the MAC input and returns 8 bytes.

``x919``: ANSI X9.19 = ISO/IEC 9797-1 MAC algorithm 3 with DES, padding method 1, under a
double-length key (left half for the CBC chain, right half for the final decrypt).
``x99``: ANSI X9.9 = plain DES CBC-MAC, padding method 1, under the left half of the key;
the full 8-byte last block is the MAC.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Callable

from .des import Ecb, cbc_encryptor

MacFunction = Callable[[bytes, bytes], bytes]
ZERO_BLOCK = bytes(8)


def pad_method1(data: bytes) -> bytes:
    """Zero bytes up to a multiple of 8; empty data becomes one zero block."""
    return data + bytes(-len(data) % 8) if data else ZERO_BLOCK


def pad_method2(data: bytes) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % 8)


def iso9797_alg3(key: bytes, key2: bytes, data: bytes, padding: int = 1) -> bytes:
    """Reference ISO/IEC 9797-1 algorithm 3, block by block (slow; for tests and checks).
    Keys of 8 bytes make the block cipher DES, of 16 bytes two-key 3DES."""
    data = pad_method1(data) if padding == 1 else pad_method2(data)
    first, second = Ecb(key), Ecb(key2)
    chain = ZERO_BLOCK
    for i in range(0, len(data), 8):
        chain = first.encrypt(bytes(a ^ b for a, b in zip(chain, data[i:i + 8])))
    return first.encrypt(second.decrypt(chain))


class _CbcChain:
    """A DES CBC-MAC engine that keeps one cipher context per key.

    Building cipher contexts costs more than a MAC, so the CBC context is reused: it stays
    chained on the last ciphertext block, and the next message's first block is XORed with
    that block, which restarts the chain from a zero IV.
    """

    def __init__(self, left: bytes, final: Ecb):
        self._cbc = cbc_encryptor(left)
        self._last = 0
        self._final = final
        self._lock = threading.Lock()

    def __call__(self, data: bytes) -> bytes:
        data = pad_method1(data)
        head, tail = data[:-8], data[-8:]
        with self._lock:
            chained = 0
            if head:
                first = (int.from_bytes(head[:8], "big") ^ self._last).to_bytes(8, "big")
                out = self._cbc.update(first + head[8:])
                chained = self._last = int.from_bytes(out[-8:], "big")
            block = (int.from_bytes(tail, "big") ^ chained).to_bytes(8, "big")
            return self._final.encrypt(block)


def _double_length(key: bytes) -> tuple[bytes, bytes]:
    if len(key) != 16:
        raise ValueError(f"a MAC key is 16 bytes, got {len(key)}")
    return key[:8], key[8:]


@lru_cache(maxsize=512)
def _x919_engine(key: bytes) -> _CbcChain:
    left, right = _double_length(key)
    # The last block goes through E(left) D(right) E(left): two-key 3DES EDE (plain DES when equal).
    return _CbcChain(left, Ecb(key))


@lru_cache(maxsize=512)
def _x99_engine(key: bytes) -> _CbcChain:
    left = key[:8] if len(key) in (8, 16) else _double_length(key)[0]
    return _CbcChain(left, Ecb(left))


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
