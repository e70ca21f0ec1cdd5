"""Integer fen read as yuan: the one formatter of money as text (reports, the console, SMS notices,
command output), exact (``divmod``, no float)."""
from __future__ import annotations


def yuan(fen: int, grouped: bool = True) -> str:
    """123456 -> '1,234.56' ('1234.56' ungrouped, as SMS texts have it); -150 -> '-1.50'."""
    assert isinstance(fen, int) and not isinstance(fen, bool), f"money is integer fen, not {fen!r}"
    whole, cents = divmod(abs(fen), 100)
    digits = f"{whole:,}" if grouped else str(whole)
    return f"{'-' if fen < 0 else ''}{digits}.{cents:02d}"
