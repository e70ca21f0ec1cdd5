"""An engine's leases, kept while its reactor is late.

The engine renews the leases of what it holds on its reactor (``DebitEngine._renew``, every
``housekeeping_s``). A reactor held up longer than the lease - a burst of answers to work through
in a process niced below the counter's - let them lapse, and another engine took over a chunk this
one was still sending: its debits in flight were reversed, ones the bank would have applied (runs
r16 and r17, docs/scale-out.md). The keeper is a thread of its own that renews, whenever the
reactor's own renewal is late, what the reactor last said it holds and what the poll's claims
took since. Python hands the GIL to it between the reactor's bytecodes, so it runs while the
reactor is busy; only a process given no CPU at all for a whole lease loses its leases.

One renewal runs at a time, the reactor's or the keeper's (two renewals of the same rows could
lock them in different orders); once stopped, the keeper renews nothing more, so an engine that
stopped and gave its leases up does not take them back."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("gridpay.debit.engine")

Holding = tuple[frozenset, frozenset]   # chunk ids, reversal ids


class LeaseKeeper:
    def __init__(self, renew: Callable[[set, set], tuple], on_renewed: Callable[[Holding, tuple], None],
                 every_s: float, name: str):
        self._renew = renew                # (chunk ids, reversal ids) -> (chunks still held, reversals still held)
        self._on_renewed = on_renewed      # called from the keeper's thread with what it renewed and the answer
        self.every_s, self.name = every_s, name
        self._lock = threading.Lock()
        self._holding: Holding = (frozenset(), frozenset())
        self._claimed: set[int] = set()    # chunks claimed on a pool thread, not yet taken on the reactor
        self._renewed_at = time.monotonic()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0                  # renewals the keeper made because the reactor's were late

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"leases-{self.name}")
        self._thread.start()

    def stop(self) -> None:
        """No renewal after this returns (a renewal in progress is waited for). Blocks: call off the reactor."""
        self._stopped.set()
        with self._lock:
            pass
        if self._thread is not None:
            self._thread.join(timeout=self.every_s * 2)

    # --- what is held: told by the reactor thread, and by the pool's claims ---------------

    def holding(self, chunks: set[int], reversals: set[int]) -> None:
        self._holding = (frozenset(chunks), frozenset(reversals))

    def claimed(self, chunk_ids) -> None:
        with self._lock:
            self._claimed.update(chunk_ids)

    def taken(self, chunk_ids) -> None:
        """The reactor holds these chunks now (told ``holding`` first, so none is ever unknown to the keeper)."""
        with self._lock:
            self._claimed.difference_update(chunk_ids)

    # --- renewing ----------------------------------------------------------------------

    def renew(self, chunks: set[int], reversals: set[int]) -> tuple:
        """The reactor's renewal (run on a pool thread)."""
        with self._lock:
            if self._stopped.is_set():
                return set(chunks), set(reversals)   # judged as still held: nothing was renewed, nothing lost
            held = self._renew(chunks, reversals)
            self._renewed_at = time.monotonic()
            return held

    def _run(self) -> None:
        while not self._stopped.wait(self.every_s):
            if time.monotonic() - self._renewed_at < 2 * self.every_s:
                continue
            try:
                with self._lock:
                    if self._stopped.is_set():
                        return
                    holding = (self._holding[0] | self._claimed, self._holding[1])
                    held = self._renew(set(holding[0]), set(holding[1]))
                    self._renewed_at = time.monotonic()
                    self.renewals += 1
            except Exception as exc:  # noqa: BLE001 - the database away: the reactor's renewals say so too
                log.warning("engine %s: renewing its leases off the reactor failed: %s", self.name, exc)
                continue
            self._on_renewed(holding, held)
