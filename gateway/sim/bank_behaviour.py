"""How the bank simulator misbehaves on purpose (``gridpay sim bank``): latency, declines, drops,
disconnects, duplicates, bad MACs and echoes, as rates drawn from the host's seeded random."""
from __future__ import annotations

from dataclasses import dataclass, field

LATENCY_DISTS = ("fixed", "uniform", "exponential")


@dataclass
class Behaviour:
    latency_ms: float = 0.0
    latency_dist: str = "fixed"
    declines: dict[str, float] = field(default_factory=dict)
    drop_before_apply: float = 0.0
    drop_after_apply: float = 0.0
    disconnect: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 0.0
    duplicate_rate: float = 0.0
    bad_mac_rate: float = 0.0
    refuse_mac_rate: float = 0.0
    echo_interval_s: float | None = None
    answer_echo: bool = True

    def __post_init__(self):
        if self.latency_dist not in LATENCY_DISTS:
            raise ValueError(f"latency distribution must be one of {', '.join(LATENCY_DISTS)}")
        if sum(self.declines.values()) > 1:
            raise ValueError("decline rates add up to more than 1")
        self._decline_table = []
        total = 0.0
        for code, rate in self.declines.items():
            total += rate
            self._decline_table.append((total, code))


def parse_rates(text: str) -> dict[str, float]:
    """``51=0.02,05=0.01`` → {"51": 0.02, "05": 0.01}"""
    rates = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        code, _, value = part.partition("=")
        rates[code.strip()] = float(value)
        if not (len(code.strip()) == 2 and 0 <= rates[code.strip()] <= 1):
            raise ValueError(f"decline {part!r}: expected CODE=RATE with a 2-character code and 0 <= rate <= 1")
    return rates
