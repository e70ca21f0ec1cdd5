"""One garbage-collector policy for gridpay's long-running processes (gateway, worker processes,
simulators). Standard library only."""
from __future__ import annotations

import gc

_settled = False


def settle_gc() -> None:
    """Once per process, when it is up: what start-up built lives as long as the process, so the
    cyclic collector stops walking it (gc.freeze); and the youngest generation is collected every
    10,000 allocations instead of 700, since each collection walks every object of the requests
    in flight (thousands at load) however few were allocated since."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 10)
