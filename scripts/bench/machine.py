"""How fast this machine is now, against the reference machine.

On the reference machine (one of these 2-core build machines, measured in November 2026)
pyiso8583 4.0.1 takes about 21 µs to decode and 21 µs to encode a 155-byte 0200, 42 µs the
pair; the issues' speed targets were set on such a
machine. The same pair, timed here on the codec bench's 0200, says how much slower this
machine runs today. The benches print it before and after their runs, beside their figures:
this shared machine's speed has varied by a factor of two and more between days, and within
an hour. It is context for reading the figures; no target is scaled by it.

    .venv/bin/python -m scripts.bench.machine
"""
from __future__ import annotations

import json

from scripts.bench.codec import bare_rate

REFERENCE_US = 42.0  # the reference machine: 21 µs decode + 21 µs encode


def speed(seconds: float = 1.0) -> dict:
    us = 1e6 / bare_rate("ascii", seconds)
    return {"bare_pyiso8583_us": round(us, 1), "reference_us": REFERENCE_US,
            "slower_than_reference": round(us / REFERENCE_US, 2)}


def describe(figures: dict) -> str:
    return (f"machine: bare pyiso8583 decode + encode of a 0200 {figures['bare_pyiso8583_us']:.0f} µs "
            f"(reference machine: {REFERENCE_US:.0f} µs): {figures['slower_than_reference']:.2f}x slower")


def main() -> None:
    figures = speed()
    print(describe(figures))
    print(json.dumps({"bench": "machine", **figures}))


if __name__ == "__main__":
    main()
